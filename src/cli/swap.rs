//! The command-line entry points of the swap engine (`facerelay swap`, `facerelay models`,
//! `facerelay bench swap`): their arguments and what they run. `main.rs` only dispatches here.

use std::path::PathBuf;

use anyhow::bail;

use super::bench::swap as bench;
use crate::config::Config;
use crate::infer::manifest::{self, FileState, Manifest};
use crate::swap::swapper::INSWAPPER_128;
use crate::swap::{
    fixtures_dir, load_image, swap_image_files, Engine, PictureEngine, Selection, SwapperChoice,
};

/// Where the configuration and models come from.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// TOML file laid over the built-in defaults (config/default.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Use the committed stand-in models in models/fixtures/ (tests and demos).
    #[arg(long)]
    pub fixtures: bool,
}

impl ModelArgs {
    fn load(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if self.fixtures {
            config.models = config.models.with_fixtures();
        }
        Ok(config)
    }
}

/// `facerelay swap`: swap the face of one photo onto the faces of one image (offline).
#[derive(Debug, clap::Args)]
pub struct SwapArgs {
    /// Photo of the face to put in (JPEG, PNG or WebP).
    #[arg(long)]
    pub face: PathBuf,
    /// Image whose faces are replaced.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the result (PNG; the extension picks the format).
    #[arg(long)]
    pub output: PathBuf,
    /// Swap every face instead of the configured selection (all of them: `swap.max_faces`
    /// caps live streams only).
    #[arg(long, conflicts_with = "reference")]
    pub all: bool,
    /// Print what was found as JSON (detections with box, score and keypoints; swapped faces
    /// with the box written and, for the mesh swapper, the 468 landmarks).
    #[arg(long)]
    pub json: bool,
    /// Swap only the face most like the face in this photo (at least swap.min_similarity).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    #[command(flatten)]
    pub models: ModelArgs,
}

pub fn swap(args: &SwapArgs) -> anyhow::Result<()> {
    let config = args.models.load()?;
    let mut engine = PictureEngine::load(&config.models, &config.swap)?;
    let selection = match &args.reference {
        Some(path) => engine.reference(path)?,
        None if args.all => Selection::All,
        None => Selection::from(config.swap.selection),
    };
    let report = swap_image_files(
        &mut engine,
        &args.face,
        &args.input,
        &args.output,
        &selection,
    )?;
    if args.json {
        let doc = serde_json::json!({
            "output": args.output.display().to_string(),
            "swapper": engine.swapper_name(),
            "detected": report.detected,
            "swapped": report.swapped,
        });
        println!("{doc}");
    } else {
        println!(
            "{}: {} face(s) detected, {} swapped ({} swapper)",
            args.output.display(),
            report.detected.len(),
            report.swapped.len(),
            engine.swapper_name()
        );
    }
    Ok(())
}

/// `facerelay models check|fetch`.
#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub action: ModelsAction,
    /// TOML file laid over the built-in defaults (its `models.dir` is the folder checked).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum ModelsAction {
    /// Verify size and sha256 of every model file in the models folder.
    Check,
    /// Download missing or damaged model files from their public sources (resumable).
    Fetch,
    /// Write verified variants of the deep swapper's and the detector's files beside them: a
    /// dynamic batch dimension (the live stage then batches frames and faces of several
    /// streams) and, with --fp16, a float16 swapper for the GPU providers; recorded with sha256
    /// in models.dir/prepared.json. Runs tools/prepare_models.py in .deps/venv-models (from
    /// the project folder).
    Prepare {
        /// Also write and verify the float16 variant.
        #[arg(long)]
        fp16: bool,
    },
}

pub fn models(args: &ModelsArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let manifest = Manifest::embedded()?;
    let dir = &config.models.dir;
    // The deep family whose files check and fetch look at: `swap.swapper`'s, else inswapper's.
    let family = config
        .swap
        .swapper
        .deep(&config.models)
        .unwrap_or(&INSWAPPER_128);
    match args.action {
        ModelsAction::Check => {
            let deep = manifest::check(&manifest, dir, family.name)?;
            let packaged = manifest::check_packaged(&manifest, &config.models.packaged_dir)?;
            println!("deep models in {}:", dir.display());
            for s in &deep {
                println!("  {s}");
            }
            println!("packaged set in {}:", config.models.packaged_dir.display());
            for s in &packaged {
                println!("  {s}");
            }
            let bad = |list: &[manifest::FileStatus]| {
                list.iter().filter(|s| s.state != FileState::Ok).count()
            };
            // What `serve` does with these files (swap.swapper and its auto rule).
            let choice = match config.swap.swapper {
                SwapperChoice::Auto => SwapperChoice::auto(&config.models),
                other => Some(other),
            };
            match choice {
                None => bail!(
                    "neither set is here: `facerelay serve` relays without a face swap; run scripts/setup.sh for the packaged set"
                ),
                Some(SwapperChoice::Deep(c)) if c == &INSWAPPER_128 && bad(&deep) > 0 => bail!(
                    "{} deep model file(s) missing or damaged in {}: `facerelay serve` refuses to start; run `facerelay models fetch` or see models/README.md",
                    bad(&deep),
                    dir.display()
                ),
                Some(SwapperChoice::Deep(c)) => {
                    // Families other than inswapper are placed by hand (models/README.md): their
                    // files are checked at start-up against the contract, not against a hash.
                    let missing: Vec<String> = c
                        .files(&config.models)
                        .into_iter()
                        .filter(|f| !f.is_file())
                        .map(|f| f.display().to_string())
                        .collect();
                    if !missing.is_empty() {
                        bail!(
                            "{} needs {}: `facerelay serve` refuses to start; see models/README.md",
                            c.name,
                            missing.join(", ")
                        );
                    }
                    println!("facerelay serve runs the deep swapper {}", c.name)
                }
                Some(SwapperChoice::Mesh) if bad(&packaged) > 0 => bail!(
                    "{} packaged file(s) missing or damaged in {}: `facerelay serve` refuses to start; run scripts/install-packaged-models.sh",
                    bad(&packaged),
                    config.models.packaged_dir.display()
                ),
                Some(_) => println!("facerelay serve runs the mesh swapper"),
            }
        }
        ModelsAction::Prepare { fp16 } => super::prepare::prepare(&config, fp16)?,
        ModelsAction::Fetch => {
            // A file the manifest does not pin is kept only if it is the model its family
            // expects.
            let accept = |f: &manifest::ManifestFile, path: &std::path::Path| {
                family.check_file(&config.models, &f.name, path)
            };
            for (name, what) in manifest::fetch(&manifest, dir, family.name, &accept)? {
                println!("{name}: {what:?}");
            }
        }
    }
    Ok(())
}

/// `facerelay bench swap`: median time per pipeline stage at 640x480 and 1280x720, one face.
#[derive(Debug, clap::Args)]
pub struct SwapBenchArgs {
    #[command(flatten)]
    pub models: ModelArgs,
    /// Measured frames per size (after 5 warm-up frames).
    #[arg(long, default_value_t = 100)]
    pub frames: usize,
    /// Photo of the source face (default: the stand-in test card's source).
    #[arg(long)]
    pub face: Option<PathBuf>,
    /// Picture with one face, resized to each frame size (default: the drawn test card, which
    /// only the stand-in detector sees as a face; use a real photo with the real models).
    #[arg(long)]
    pub input: Option<PathBuf>,
}

pub fn bench_swap(args: &SwapBenchArgs) -> anyhow::Result<()> {
    let config = args.models.load()?;
    let mut engine = Engine::load(&config.models, &config.swap)?;
    let or_fixture =
        |p: &Option<PathBuf>, name: &str| p.clone().unwrap_or(fixtures_dir().join(name));
    let source = load_image(&or_fixture(&args.face, "testcard_source.jpg"), &config.swap)?;
    let target = load_image(
        &or_fixture(&args.input, "testcard_target.png"),
        &config.swap,
    )?;
    let results = bench::run(
        &mut engine,
        &source,
        &target,
        &[(640, 480), (1280, 720)],
        5,
        args.frames.max(1),
    )?;
    println!(
        "models: {} (provider {})",
        config.models.dir.display(),
        config.models.provider
    );
    if results.iter().any(|r| r.faces_swapped == 0) {
        bail!("no face was swapped in the bench frames: with the real models, pass --input PHOTO");
    }
    print!("{}", bench::table(&results));
    println!("{}", serde_json::to_string_pretty(&results)?);
    Ok(())
}
