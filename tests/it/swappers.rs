//! The deep swapper families behind one interface (`swap.swapper`), each with its contract —
//! crop, template, pixel scale, identity input — on the stand-ins of models/fixtures/
//! (`tools/gen_test_models.py`): the swapper alone, the identity each takes, the offline command
//! and the live stage.

use std::process::Command;

use facerelay::config::Config;
use facerelay::media::{FrameStage, I420Frame, StreamId};
use facerelay::swap::color::{rgb_to_i420, Planes};
use facerelay::swap::detect::{DetectParams, Detection, Detector};
use facerelay::swap::live::LiveSwap;
use facerelay::swap::swapper::{Contract, INSWAPPER_128, SIMSWAP_256};
use facerelay::swap::{
    fixtures_dir, load_image, Emap, Engine, Selection, StageTimings, Swapper, SwapperChoice,
};

fn family(name: &str) -> &'static Contract {
    Contract::by_name(name).unwrap()
}

/// The stand-in configuration running `name`.
fn config(name: &str) -> Config {
    let mut c = crate::swap::config();
    c.swap.swapper = SwapperChoice::Deep(family(name));
    c.swap.watermark = false;
    c.swap.label = false;
    c.swap.timeout_ms = 20_000;
    c
}

fn card(c: &Config) -> I420Frame {
    rgb_to_i420(&photo_of(c, "testcard_target.png")).unwrap()
}

fn photo_of(c: &Config, fixture: &str) -> image::RgbImage {
    load_image(&fixtures_dir().join(fixture), &c.swap).unwrap()
}

const FAMILIES: [&str; 3] = ["inswapper_128", "hyperswap_1a_256", "simswap_256"];

/// Every stand-in computes 0.3·x + 0.7·colour on the [0,1] scale, whatever scale its file
/// takes and returns: so out(x) − out(0) = 0.3·x exactly when the swapper scales the crop in
/// and back out as the family's contract says.
#[test]
fn each_family_takes_and_returns_its_own_pixel_scale() {
    let _g = crate::swap::one_at_a_time();
    let c = crate::swap::config();
    let rt = facerelay::infer::runtime(&c.models).unwrap();
    for name in FAMILIES {
        let contract = family(name);
        let mut swapper =
            Swapper::load(rt, &c.models, &contract.path(&c.models), contract).unwrap();
        let n = contract.crop_len();
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 997) as f32 / 997.0).collect();
        let source: Vec<f32> = (0..512).map(|i| ((i as f32) * 0.37).sin() / 16.0).collect();
        let (mut out, mut base) = (vec![0.0; n], vec![0.0; n]);
        swapper.swap(&x, &source, &mut out).unwrap();
        swapper.swap(&vec![0.0; n], &source, &mut base).unwrap();
        let worst = (0..n)
            .map(|i| (out[i] - base[i] - 0.3 * x[i]).abs())
            .fold(0.0f32, f32::max);
        println!(
            "{name}: {}px crop, largest deviation from 0.3·x {worst:e}",
            contract.size
        );
        assert!(worst < 1e-4, "{name}: {worst}");
    }
}

/// A file is checked against the family it is loaded as: the 256 px stand-in is not an
/// inswapper, nor the inswapper stand-in a hyperswap.
#[test]
fn a_file_of_another_family_is_refused_at_load() {
    let c = crate::swap::config();
    let rt = facerelay::infer::runtime(&c.models).unwrap();
    let dir = fixtures_dir();
    let e = Swapper::load(
        rt,
        &c.models,
        &dir.join("hyperswap_1a_256.onnx"),
        &INSWAPPER_128,
    )
    .err()
    .expect("a 256 px file is no inswapper_128");
    assert!(e.to_string().contains("128"), "{e}");
    let e = Swapper::load(
        rt,
        &c.models,
        &dir.join("inswapper_128.onnx"),
        family("hyperswap_1a_256"),
    )
    .err()
    .expect("the inswapper file is no hyperswap");
    assert!(e.to_string().contains("256"), "{e}");
    // And a family whose identity needs a converter will not start without it.
    let mut c = config("simswap_256");
    c.models.dir = tempdir_with(&["det_10g.onnx", "w600k_r50.onnx", "simswap_256.onnx"]);
    let e = Engine::load(&c.models, &c.swap)
        .err()
        .expect("no converter");
    assert!(e.to_string().contains("crossface_simswap.onnx"), "{e}");
}

/// The identity each family takes from the same source photo: inswapper the emap latent,
/// hyperswap the unit embedding, simswap the converter's output (of the raw embedding)
/// normalised.
#[test]
fn each_family_takes_its_own_identity_input() {
    let _g = crate::swap::one_at_a_time();
    let photo_path = fixtures_dir().join("testcard_source.jpg");
    let mut inputs = Vec::new();
    for name in FAMILIES {
        let c = config(name);
        let mut engine = Engine::load(&c.models, &c.swap).unwrap();
        let photo = load_image(&photo_path, &c.swap).unwrap();
        let face = engine.source_face(&photo).unwrap();
        let e = face.embedding().unwrap().clone();
        let input = face.latent().unwrap().to_vec();
        let expected: Vec<f32> = match name {
            "inswapper_128" => Emap::from_model_file(&fixtures_dir().join("inswapper_128.onnx"))
                .unwrap()
                .latent(&e)
                .unwrap(),
            "hyperswap_1a_256" => e.as_slice().to_vec(),
            _ => {
                // The stand-in converter adds cos(0.3 i)/2 to what it is given.
                let v: Vec<f32> = e
                    .raw()
                    .iter()
                    .enumerate()
                    .map(|(i, r)| r + ((0.3 * i as f64).cos() / 2.0) as f32)
                    .collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter().map(|x| x / norm).collect()
            }
        };
        let worst = input
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert_eq!(input.len(), 512, "{name}");
        assert!(worst < 1e-5, "{name}: identity input off by {worst}");
        inputs.push(input);
    }
    // Three different inputs from one face.
    assert_ne!(inputs[0], inputs[1]);
    assert_ne!(inputs[1], inputs[2]);
}

/// The offline command and the live stage swap the test card's face with each 256 px family:
/// the face changes, nothing outside the paste box does, the live stage's first frame is the
/// engine's result, and SimSwap's template places the crop differently from hyperswap's.
#[test]
fn the_offline_command_and_the_live_stage_run_each_family() {
    let _g = crate::swap::one_at_a_time();
    let mut boxes = Vec::new();
    for name in ["hyperswap_1a_256", "simswap_256"] {
        let c = config(name);
        let before = card(&c);
        let mut engine = Engine::load(&c.models, &c.swap).unwrap();
        let photo = load_image(&fixtures_dir().join("testcard_source.jpg"), &c.swap).unwrap();
        let source = engine.source_face(&photo).unwrap();
        let mut offline = before.clone();
        let report = engine
            .swap_frame(&mut offline, &source, &Selection::Largest)
            .unwrap();
        assert_eq!(report.swapped.len(), 1, "{name}");
        let bx = report.swapped[0].paste_box.map(|v| v as usize);
        let w = before.width() as usize;
        let outside = (0..before.y().len())
            .filter(|&i| {
                let (x, y) = (i % w, i / w);
                before.y()[i] != offline.y()[i]
                    && !(x >= bx[0] && x < bx[2] && y >= bx[1] && y < bx[3])
            })
            .count();
        assert_eq!(outside, 0, "{name}: pixels changed outside the paste box");
        let centre = |f: &I420Frame| {
            let (cx, cy) = ((bx[0] + bx[2]) / 2, (bx[1] + bx[3]) / 2);
            f.y()[cy * w + cx]
        };
        assert_ne!(
            centre(&offline),
            centre(&before),
            "{name}: the face changed"
        );
        boxes.push(bx);

        let live = LiveSwap::load(&c.models, &c.swap).unwrap();
        let s = std::sync::Arc::new(live.source_face(&photo).unwrap());
        assert_eq!(s.latent().unwrap(), source.latent().unwrap(), "{name}");
        live.faces().set("p1", s).unwrap();
        let mut p = live.open(StreamId(3), "p1");
        let mut f = before.clone();
        p.process(&mut f);
        assert_eq!(
            f, offline,
            "{name}: the live stage swaps as the engine does"
        );
        assert_eq!(live.deep().unwrap().contract.name, name);

        // The command line: `facerelay swap --fixtures` with this family.
        let dir = std::env::temp_dir().join(format!("facerelay-families-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join(format!("{name}.png"));
        let o = Command::new(env!("CARGO_BIN_EXE_facerelay"))
            .args(["swap", "--fixtures", "--face"])
            .arg(fixtures_dir().join("testcard_source.jpg"))
            .arg("--input")
            .arg(fixtures_dir().join("testcard_target.png"))
            .arg("--output")
            .arg(&out)
            .env("FACERELAY_SWAP__SWAPPER", name)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let written = rgb_to_i420(&image::open(&out).unwrap().to_rgb8()).unwrap();
        let diff = (centre(&written) as i32 - centre(&offline) as i32).abs();
        assert!(
            diff <= 2,
            "{name}: the command's face centre differs by {diff}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
    assert_ne!(boxes[0], boxes[1], "different templates, different crops");
    assert_eq!(SIMSWAP_256.size, 256);
}

/// `swap.swapper = "auto"` picks the first family whose file is in models.dir.
#[test]
fn auto_picks_the_family_whose_file_is_there() {
    let mut c = crate::swap::config();
    c.models.dir = tempdir_with(&["det_10g.onnx", "w600k_r50.onnx", "hyperswap_1a_256.onnx"]);
    assert_eq!(
        SwapperChoice::auto(&c.models),
        Some(SwapperChoice::Deep(family("hyperswap_1a_256")))
    );
    c.models.dir = tempdir_with(&["det_10g.onnx", "w600k_r50.onnx"]);
    // The shared files alone: inswapper_128, whose missing file then fails loudly.
    assert_eq!(
        SwapperChoice::auto(&c.models),
        Some(SwapperChoice::Deep(&INSWAPPER_128))
    );
    let e = Config::load_with_env(
        None,
        [("FACERELAY_SWAP__SWAPPER".into(), "ghost_1_256".into())],
    )
    .unwrap_err();
    assert!(e.to_string().contains("hyperswap_1a_256"), "{e}");
}

/// `facerelay models prepare --fp16` on the stand-in swapper and detector writes a dynamic-batch
/// variant of each and an fp16 swapper, each checked against the original on random inputs and
/// on real ones (the photos of the packaged folder: here the test cards, where the stand-in
/// detector finds its faces) and recorded with both sha256s; the live stage then runs the batch
/// variants (several streams share detector and swapper runs) as long as the original is the
/// one prepared, and the fp16 one stays within its tolerance.
#[test]
fn prepared_variants_are_checked_recorded_and_run_while_they_match() {
    let _g = crate::swap::one_at_a_time();
    let dir = tempdir_with(&["det_10g.onnx", "w600k_r50.onnx", "inswapper_128.onnx"]);
    let record = prepare(&dir, &["--fp16"], &[]);
    let variants = record["variants"].as_array().unwrap();
    let kinds: Vec<(&str, &str)> = variants
        .iter()
        .map(|v| (v["source"].as_str().unwrap(), v["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("inswapper_128.onnx", "dynamic-batch"),
            ("inswapper_128.onnx", "fp16"),
            ("det_10g.onnx", "dynamic-batch")
        ]
    );
    for v in variants {
        assert!(v["max_difference"].as_f64().unwrap() <= v["tolerance"].as_f64().unwrap());
        assert_eq!(v["inputs"], serde_json::json!(["random", "real"]), "{v}");
        let file = dir.join(v["file"].as_str().unwrap());
        assert_eq!(
            facerelay::infer::manifest::sha256_file(&file).unwrap(),
            v["sha256"].as_str().unwrap()
        );
    }

    // The fp16 variant loads with the inswapper contract and stays within 2e-2.
    let mut c = crate::swap::config();
    c.models.dir = dir.clone();
    let rt = facerelay::infer::runtime(&c.models).unwrap();
    let mut full = Swapper::load(
        rt,
        &c.models,
        &dir.join("inswapper_128.onnx"),
        &INSWAPPER_128,
    )
    .unwrap();
    let mut half = Swapper::load(
        rt,
        &c.models,
        &dir.join("inswapper_128.batch.fp16.onnx"),
        &INSWAPPER_128,
    )
    .unwrap();
    let n = INSWAPPER_128.crop_len();
    let x: Vec<f32> = (0..n).map(|i| ((i * 31) % 101) as f32 / 101.0).collect();
    let source: Vec<f32> = (0..512).map(|i| ((i as f32) * 0.11).cos() / 16.0).collect();
    let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
    full.swap(&x, &source, &mut a).unwrap();
    half.swap(&x, &source, &mut b).unwrap();
    let worst = a
        .iter()
        .zip(&b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 2e-2, "fp16 off by {worst}");

    // The detector's batch variant gives each frame of a batch the faces the file gives it alone.
    let params = DetectParams {
        score_threshold: c.swap.score_threshold,
        nms_threshold: c.swap.nms_threshold,
    };
    let source = rgb_to_i420(&photo_of(&c, "testcard_source.jpg")).unwrap();
    let frames = [card(&c), source.clone(), card(&c), source];
    let planes: Vec<Planes> = frames.iter().map(Planes::of).collect();
    let mut alone =
        Detector::load(rt, &c.models, &dir.join("det_10g.onnx"), c.swap.det_size).unwrap();
    let mut batched = Detector::load(
        rt,
        &c.models,
        &dir.join("det_10g.batch.onnx"),
        c.swap.det_size,
    )
    .unwrap();
    assert!(!alone.dynamic_batch() && batched.dynamic_batch());
    let mut t = StageTimings::default();
    let each: Vec<Vec<Detection>> = planes
        .iter()
        .map(|p| alone.detect(*p, &params, &mut t).unwrap())
        .collect();
    assert!(each.iter().all(|faces| !faces.is_empty()));
    assert_ne!(each[0], each[1]);
    for n in [1, 2, 4, 3] {
        assert_eq!(
            batched.detect_many(&planes[..n], &params, &mut t).unwrap(),
            each[..n],
            "batch {n}"
        );
    }
    // The same through bound host buffers (pinned on the GPU providers; the CPU allocator here,
    // the same code), for the file ([anchors, C] outputs) and the variant ([N, anchors, C]).
    for d in [&mut alone, &mut batched] {
        d.bind_host_memory(facerelay::infer::bound::HostMemory::Cpu)
            .unwrap();
    }
    for (k, p) in planes.iter().enumerate() {
        assert_eq!(
            alone.detect(*p, &params, &mut t).unwrap(),
            each[k],
            "bound, frame {k}"
        );
    }
    for n in [4, 1, 2, 4] {
        assert_eq!(
            batched.detect_many(&planes[..n], &params, &mut t).unwrap(),
            each[..n],
            "bound, batch {n}"
        );
    }
    assert!(
        alone.is_bound() && batched.is_bound(),
        "the bound runs did not fall back"
    );

    // The live stage runs the batch variants (on the CPU: not the fp16 one).
    c.swap.swapper_workers = 1;
    c.swap.detector_workers = 1;
    c.swap.max_batch = 8;
    c.swap.max_wait_ms = 40;
    c.swap.capacity = 6;
    c.swap.timeout_ms = 20_000;
    // Runs of more than one request: (detector, swapper).
    let batched_runs = |c: &Config| {
        let live = LiveSwap::load(&c.models, &c.swap).unwrap();
        let photo = load_image(&fixtures_dir().join("testcard_source.jpg"), &c.swap).unwrap();
        let s = std::sync::Arc::new(live.source_face(&photo).unwrap());
        crate::live::swap_in_streams(&live, &s, &card(c), 6, 4);
        let deep = live.deep().unwrap();
        let (det, swap) = (deep.detector.stats(), deep.swapper.stats());
        println!(
            "runs by batch size: detector {:?}, swapper {:?}",
            det.batch_sizes, swap.batch_sizes
        );
        let more_than_one = |sizes: &[u64]| sizes[1..].iter().sum::<u64>();
        (
            more_than_one(&det.batch_sizes),
            more_than_one(&swap.batch_sizes),
        )
    };
    let (det, swap) = batched_runs(&c);
    assert!(det > 0, "several streams share detector runs");
    assert!(swap > 0, "several streams share swapper runs");
    // With models.prepared off, once the original is not the file prepared, or once the
    // variant changed, the file runs as it is.
    c.models.prepared = false;
    assert_eq!(batched_runs(&c), (0, 0));
    c.models.prepared = true;
    let record_path = dir.join("prepared.json");
    let good = std::fs::read_to_string(&record_path).unwrap();
    let source_sha = variants[0]["source_sha256"].as_str().unwrap();
    std::fs::write(&record_path, good.replace(source_sha, &"0".repeat(64))).unwrap();
    assert_eq!(batched_runs(&c).1, 0, "the swapper file changed");
    std::fs::write(&record_path, &good).unwrap();
    std::fs::write(dir.join("inswapper_128.batch.onnx"), b"changed").unwrap();
    std::fs::write(dir.join("det_10g.batch.onnx"), b"changed").unwrap();
    assert_eq!(batched_runs(&c), (0, 0), "the variants changed");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `facerelay models prepare ARGS` on `dir` with extra environment `env`, the test cards as the
/// packaged photos (the stand-in detector finds its faces there): its prepared.json, once the
/// command succeeded and left no scratch folder behind.
fn prepare(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let photos = dir.join("packaged/photos");
    std::fs::create_dir_all(&photos).unwrap();
    for f in ["testcard_source.jpg", "testcard_target.png"] {
        std::fs::copy(fixtures_dir().join(f), photos.join(f)).unwrap();
    }
    let child = Command::new(env!("CARGO_BIN_EXE_facerelay"))
        .args(["models", "prepare"])
        .args(args)
        .env("FACERELAY_MODELS__DIR", dir)
        .env("FACERELAY_MODELS__PACKAGED_DIR", dir.join("packaged"))
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let o = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    println!("{said}");
    // The real inputs were in a scratch folder of their own, gone with the command.
    assert!(!std::env::temp_dir()
        .join(format!("facerelay-prepare-{pid}"))
        .exists());
    serde_json::from_str(&std::fs::read_to_string(dir.join("prepared.json")).unwrap()).unwrap()
}

/// The other families' files are prepared the same way, their real inputs on each family's own
/// crop size and pixel scale; the live stage then batches with them.
#[test]
fn every_family_is_prepared_on_its_own_real_inputs() {
    let _g = crate::swap::one_at_a_time();
    for (family, files) in [
        ("hyperswap_1a_256", &["hyperswap_1a_256.onnx"][..]),
        (
            "simswap_256",
            &["simswap_256.onnx", "crossface_simswap.onnx"][..],
        ),
    ] {
        let mut all = vec!["det_10g.onnx", "w600k_r50.onnx"];
        all.extend(files);
        let dir = tempdir_with(&all);
        let record = prepare(&dir, &[], &[("FACERELAY_SWAP__SWAPPER", family)]);
        let variants = record["variants"].as_array().unwrap();
        let made: Vec<(&str, &str)> = variants
            .iter()
            .map(|v| {
                (
                    v["source"].as_str().unwrap(),
                    v["inputs"][1].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            made,
            [(files[0], "real"), ("det_10g.onnx", "real")],
            "{family}"
        );

        let mut c = config(family);
        c.models.dir = dir.clone();
        c.swap.max_batch = 8;
        c.swap.max_wait_ms = 40;
        c.swap.capacity = 6;
        let live = LiveSwap::load(&c.models, &c.swap).unwrap();
        let s = std::sync::Arc::new(
            live.source_face(&photo_of(&c, "testcard_source.jpg"))
                .unwrap(),
        );
        crate::live::swap_in_streams(&live, &s, &card(&c), 6, 4);
        let sizes = live.deep().unwrap().swapper.stats().batch_sizes;
        println!("{family}: swapper runs by batch size {sizes:?}");
        assert!(sizes[1..].iter().sum::<u64>() > 0, "{family}: {sizes:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// What `models fetch` keeps of a file the manifest does not pin: only the model its family's
/// contract expects, under the name it has there.
#[test]
fn a_fetched_file_is_checked_against_its_family_contract() {
    let c = crate::swap::config();
    let dir = fixtures_dir();
    let hyperswap = family("hyperswap_1a_256");
    let simswap = family("simswap_256");
    let check =
        |f: &Contract, name: &str, file: &str| f.check_file(&c.models, name, &dir.join(file));
    assert_eq!(
        check(hyperswap, "hyperswap_1a_256.onnx", "hyperswap_1a_256.onnx"),
        Ok(())
    );
    assert_eq!(
        check(simswap, "simswap_256.onnx", "simswap_256.onnx"),
        Ok(())
    );
    assert_eq!(
        check(simswap, "crossface_simswap.onnx", "crossface_simswap.onnx"),
        Ok(())
    );
    // Another family's model, a model of the wrong role, a file that is no model, a stranger.
    let e = check(hyperswap, "hyperswap_1a_256.onnx", "inswapper_128.onnx").unwrap_err();
    assert!(e.contains("swapper"), "{e}");
    assert!(check(simswap, "crossface_simswap.onnx", "simswap_256.onnx").is_err());
    assert!(check(hyperswap, "hyperswap_1a_256.onnx", "testcard_source.jpg").is_err());
    let e = check(hyperswap, "simswap_256.onnx", "simswap_256.onnx").unwrap_err();
    assert!(e.contains("no file of hyperswap_1a_256"), "{e}");
}

/// A folder holding copies of these fixture files.
fn tempdir_with(files: &[&str]) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("facerelay-fam-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in files {
        std::fs::copy(fixtures_dir().join(f), dir.join(f)).unwrap();
    }
    dir
}
