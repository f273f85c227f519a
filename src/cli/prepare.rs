//! `facerelay models prepare`: runs tools/prepare_models.py on the deep swapper's and the
//! detector's files, with real inputs made from the packaged photos so that the variants are
//! checked on faces as well as on random values.
//!
//! The real inputs: each packaged photo letterboxed as the detector gets it (four items, the
//! photos in turn), and the faces the detector finds in them aligned as the swapper gets them,
//! each with the identity input of a face from another photo. They go to a folder of their own
//! in the system's temporary folder (raw little-endian float32 files and a JSON index, the
//! format the tool reads) and are removed when it ends. The photos are the packaged historic
//! portraits, never a user's.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::config::Config;
use crate::media::I420Frame;
use crate::swap::color::{rgb_to_i420, Planes};
use crate::swap::detect::{letterboxed, Detector};
use crate::swap::swapper::{Contract, INSWAPPER_128};
use crate::swap::{align_for_swap, by_area, load_image, DeepMask, Engine, SourceFace};

/// Items of each real input: the largest batch the tool checks.
const ITEMS: usize = 4;

pub fn prepare(config: &Config, fp16: bool) -> anyhow::Result<()> {
    let models = &config.models;
    let contract = config.swap.swapper.deep(models).unwrap_or(&INSWAPPER_128);
    let swapper = contract.path(models);
    if !swapper.is_file() {
        bail!(
            "{} is not here: place the {} file first (models/README.md)",
            swapper.display(),
            contract.name
        );
    }
    let (tool, venv) = ("tools/prepare_models.py", "scripts/venv-models.sh");
    if !Path::new(tool).is_file() {
        bail!("{tool} is not here: run `facerelay models prepare` from the facerelay folder");
    }
    let status = std::process::Command::new("bash")
        .args([
            venv,
            "tools/requirements-models.txt",
            "tools/requirements-prepare.txt",
        ])
        .status()?;
    if !status.success() {
        bail!("{venv} could not set up the Python packages prepare needs");
    }
    let mut run = std::process::Command::new(".deps/venv-models/bin/python");
    run.arg(tool).arg("--dir").arg(&models.dir);
    let detector = models.detector_path();
    for file in [&swapper, &detector] {
        if file.is_file() {
            if let Some(name) = file.file_name() {
                run.arg("--model").arg(name);
            }
        }
    }
    if fp16 {
        run.arg("--fp16");
    }
    let scratch = std::env::temp_dir().join(format!("facerelay-prepare-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let made = write_real_inputs(config, contract, &scratch);
    let ok = match made {
        Ok(index) => run.arg("--inputs").arg(index).status(),
        Err(e) => {
            println!("no real inputs ({e:#}): the variants are checked on random inputs only");
            run.status()
        }
    };
    let _ = std::fs::remove_dir_all(&scratch);
    if !ok?.success() {
        bail!("a variant did not pass its check against the original (above): it was not written");
    }
    Ok(())
}

/// Writes the real inputs into `dir` and returns the index file.
fn write_real_inputs(
    config: &Config,
    contract: &'static Contract,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    let (models, swap) = (&config.models, &config.swap);
    let folder = models.packaged_dir.join("photos");
    let mut photos: Vec<PathBuf> = std::fs::read_dir(&folder)
        .with_context(|| format!("{} does not read", folder.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            matches!(ext.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg")
        })
        .collect();
    photos.sort();
    if photos.is_empty() {
        bail!("no photo in {}", folder.display());
    }
    let frames = photos
        .iter()
        .map(|p| Ok(rgb_to_i420(&load_image(p, swap)?)?))
        .collect::<anyhow::Result<Vec<I420Frame>>>()?;

    let mut index = serde_json::Map::new();
    let mut save = |model: &Path, input: &str, shape: Vec<usize>, data: &[f32]| {
        let file = format!("{}.{input}.f32", index.len());
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(dir.join(&file), bytes)?;
        let name = model.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let entry = index
            .entry(name.to_owned())
            .or_insert_with(|| serde_json::json!({}));
        entry[input] = serde_json::json!({ "file": file, "shape": shape });
        anyhow::Ok(())
    };

    let rt = crate::infer::runtime(models)?;
    let detector_path = models.detector_path();
    if detector_path.is_file() {
        let detector = Detector::load(rt, models, &detector_path, swap.det_size)?;
        let s = swap.det_size as usize;
        let data: Vec<f32> = (0..ITEMS)
            .flat_map(|k| letterboxed(Planes::of(&frames[k % frames.len()]), swap.det_size))
            .collect();
        save(
            &detector_path,
            detector.input_name(),
            vec![ITEMS, 3, s, s],
            &data,
        )?;
    }

    // The faces, and an identity from each photo that has one; each face is given another
    // photo's identity where there is one.
    let mut only_swap = swap.clone();
    only_swap.deep_mask = DeepMask::Square;
    let mut engine = Engine::load(models, &only_swap)?;
    let mut faces = Vec::new();
    let mut identities: Vec<SourceFace> = Vec::new();
    for (p, frame) in frames.iter().enumerate() {
        let found = by_area(&engine.detect(frame)?, ITEMS);
        if let Some(face) = found.first() {
            let embedding = engine.embed(frame, face)?;
            identities.push(engine.source_of(embedding, *face)?);
            faces.extend(found.into_iter().map(|f| (p, identities.len() - 1, f)));
        }
    }
    if faces.is_empty() {
        println!(
            "the packaged photos show no face to this detector: the swapper is checked on random inputs only"
        );
    } else {
        let len = contract.crop_len();
        let (mut targets, mut sources) = (Vec::new(), Vec::new());
        for k in 0..ITEMS {
            let (p, own, face) = faces[k % faces.len()];
            let mut crop = vec![0.0; len];
            align_for_swap(&frames[p], &face.kps, contract, &mut crop)
                .context("a packaged face does not align")?;
            targets.extend(crop);
            let other = &identities[(own + 1) % identities.len()];
            sources.extend_from_slice(other.latent()?);
        }
        contract.to_model_scale(&mut targets);
        let swapper = contract.path(models);
        let (size, latent) = (contract.size, sources.len() / ITEMS);
        save(&swapper, "target", vec![ITEMS, 3, size, size], &targets)?;
        save(&swapper, "source", vec![ITEMS, latent], &sources)?;
    }
    let path = dir.join("real-inputs.json");
    std::fs::write(&path, serde_json::to_vec(&index)?)?;
    Ok(path)
}
