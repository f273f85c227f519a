//! The `facerelay` command line: a thin shell over the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "facerelay",
    version,
    about = "Live face-swap video relay over WebRTC"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay server (web page, signalling, media).
    Serve {
        /// TOML file laid over the built-in defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Swap the face of one photo onto the faces of one image (offline).
    Swap {
        /// Photo of the face to put in (JPEG, PNG or WebP).
        #[arg(long)]
        face: PathBuf,
        /// Image whose faces are replaced.
        #[arg(long)]
        input: PathBuf,
        /// Where to write the result (PNG; the extension picks the format).
        #[arg(long)]
        output: PathBuf,
        /// Swap every face instead of the configured selection.
        #[arg(long, conflicts_with = "reference")]
        all: bool,
        /// Swap only the face most like the face in this photo (at least swap.min_similarity).
        #[arg(long)]
        reference: Option<PathBuf>,
        #[command(flatten)]
        models: ModelArgs,
    },
    /// Check or download the model files.
    Models {
        #[command(subcommand)]
        action: ModelsAction,
        /// TOML file laid over the built-in defaults.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Print performance figures.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(clap::Args)]
struct ModelArgs {
    /// TOML file laid over the built-in defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Use the committed stand-in models in models/fixtures/ (tests and demos).
    #[arg(long)]
    fixtures: bool,
}

#[derive(Subcommand)]
enum ModelsAction {
    /// Verify size and sha256 of every model file in the models folder.
    Check,
    /// Download missing or damaged model files from their public sources (resumable).
    Fetch,
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Median time per pipeline stage at 640x480 and 1280x720 with one face.
    Swap {
        #[command(flatten)]
        models: ModelArgs,
        /// Measured frames per size (after 5 warm-up frames).
        #[arg(long, default_value_t = 100)]
        frames: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(config),
        Command::Swap {
            face,
            input,
            output,
            all,
            reference,
            models,
        } => swap(&face, &input, &output, all, reference.as_deref(), &models),
        Command::Models { action, config } => models(action, config),
        Command::Bench {
            what: BenchWhat::Swap { models, frames },
        } => bench_swap(&models, frames),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("facerelay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let _config = facerelay::config::Config::load(config.as_deref())?;
    anyhow::bail!("serve is not built yet")
}

fn load_config(args: &ModelArgs) -> anyhow::Result<facerelay::config::Config> {
    let mut config = facerelay::config::Config::load(args.config.as_deref())?;
    if args.fixtures {
        config.models = config.models.with_fixtures();
    }
    Ok(config)
}

fn swap(
    face: &Path,
    input: &Path,
    output: &Path,
    all: bool,
    reference: Option<&Path>,
    args: &ModelArgs,
) -> anyhow::Result<()> {
    use facerelay::swap::{Engine, Selection};
    let config = load_config(args)?;
    let mut engine = Engine::load(&config.models, &config.swap)?;
    let selection = match reference {
        Some(path) => engine.reference(path)?,
        None if all => Selection::All,
        None => Selection::from(config.swap.selection),
    };
    let report = facerelay::swap::swap_image_files(&mut engine, face, input, output, &selection)?;
    println!(
        "{}: {} face(s) detected, {} swapped",
        output.display(),
        report.detected.len(),
        report.swapped.len()
    );
    Ok(())
}

fn models(action: ModelsAction, config: Option<PathBuf>) -> anyhow::Result<()> {
    use facerelay::infer::manifest::{self, FileState, Manifest};
    let config = facerelay::config::Config::load(config.as_deref())?;
    let manifest = Manifest::embedded()?;
    let dir = &config.models.dir;
    match action {
        ModelsAction::Check => {
            let statuses = manifest::check(&manifest, dir)?;
            for s in &statuses {
                println!("{s}");
            }
            let bad = statuses.iter().filter(|s| s.state != FileState::Ok).count();
            if bad > 0 {
                anyhow::bail!(
                    "{bad} model file(s) missing or damaged in {}: run `facerelay models fetch` or see models/README.md",
                    dir.display()
                );
            }
            Ok(())
        }
        ModelsAction::Fetch => {
            for (name, what) in manifest::fetch(&manifest, dir)? {
                println!("{name}: {what:?}");
            }
            Ok(())
        }
    }
}

fn bench_swap(args: &ModelArgs, frames: usize) -> anyhow::Result<()> {
    use facerelay::swap::{bench, fixtures_dir, load_image, Engine};
    let config = load_config(args)?;
    let mut engine = Engine::load(&config.models, &config.swap)?;
    let source = load_image(&fixtures_dir().join("testcard_source.jpg"), &config.swap)?;
    let target = load_image(&fixtures_dir().join("testcard_target.png"), &config.swap)?;
    let results = bench::run(
        &mut engine,
        &source,
        &target,
        &[(640, 480), (1280, 720)],
        5,
        frames.max(1),
    )?;
    println!(
        "models: {} (provider {})",
        config.models.dir.display(),
        config.models.provider
    );
    print!("{}", bench::table(&results));
    println!("{}", serde_json::to_string_pretty(&results)?);
    Ok(())
}
