//! The whole face pipeline on the committed test card, with the stand-in models of
//! models/fixtures/ run by ONNX Runtime on the CPU.
//!
//! The ONNX Runtime library must be installed (scripts/install-onnxruntime.sh); these tests fail
//! with that instruction when it is not, rather than skipping.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use facerelay::config::Config;
use facerelay::infer::{InferError, ModelsConfig, Provider};
use facerelay::media::I420Frame;
use facerelay::swap::color::{i420_to_rgb, rgb_to_i420, rgb_to_yuv};
use facerelay::swap::{
    fixtures_dir, load_image, Emap, Engine, Selection, SourceFace, SwapConfig, SwapError,
};
use image::RgbImage;

/// Where the test card's face is: the fixture detector reports the centre of the magenta nose
/// (pixels 382..=417 x 232..=267, so 399.5, 249.5) and a box of ±2 nose sides (36 px).
const TARGET_NOSE: [f32; 2] = [399.5, 249.5];
const TARGET_BOX: [f32; 4] = [327.5, 177.5, 471.5, 321.5];
/// The source photo's nose: 40 px square centred on 159.5, 209.5.
const SOURCE_NOSE: [f32; 2] = [159.5, 209.5];

/// The defaults with the fixture models (the live stage's tests use it too).
pub(crate) fn config() -> Config {
    let mut c = Config::defaults();
    c.models = c.models.with_fixtures();
    let lib = c.models.library_path();
    assert!(
        lib.is_file(),
        "ONNX Runtime library missing at {}: run scripts/install-onnxruntime.sh first",
        lib.display()
    );
    c
}

/// Held by every test that runs the models (here and in the live stage's tests).
pub(crate) fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// One engine at a time: ONNX Runtime spreads each run over every core, and the tests that
/// count pixels should not fight over them.
fn engine() -> (MutexGuard<'static, ()>, Engine, Config) {
    let guard = one_at_a_time();
    let c = config();
    let engine = Engine::load(&c.models, &c.swap).expect("fixture models load");
    (guard, engine, c)
}

fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

fn source(engine: &mut Engine, swap: &SwapConfig) -> SourceFace {
    let photo = load_image(&fixture("testcard_source.jpg"), swap).unwrap();
    engine.source_face(&photo).unwrap()
}

fn near(a: f32, b: f32, tol: f32) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn detector_finds_the_drawn_faces_where_they_are() {
    let (_g, mut engine, c) = engine();
    let card = load_image(&fixture("testcard_target.png"), &c.swap).unwrap();
    let faces = engine.detect(&rgb_to_i420(&card).unwrap()).unwrap();
    assert_eq!(faces.len(), 1, "{faces:?}");
    let f = faces[0];
    assert!(f.score > 0.99);
    assert!(near(f.kps[2][0], TARGET_NOSE[0], 1.0) && near(f.kps[2][1], TARGET_NOSE[1], 1.0));
    for (got, want) in f.bbox.iter().zip(TARGET_BOX) {
        assert!(near(*got, want, 1.5), "{:?}", f.bbox);
    }
    // Eyes above the nose, mouth below, left before right.
    assert!(f.kps[0][0] < f.kps[1][0] && f.kps[0][1] < f.kps[2][1] && f.kps[3][1] > f.kps[2][1]);

    // The same picture at 1280x720 (detector input scaled by 0.5): same face, twice the size.
    let big = image::imageops::resize(&card, 1280, 960, image::imageops::FilterType::Triangle);
    let faces = engine.detect(&rgb_to_i420(&big).unwrap()).unwrap();
    assert_eq!(faces.len(), 1, "{faces:?}");
    assert!(
        near(faces[0].kps[2][0], 2.0 * TARGET_NOSE[0] + 0.5, 2.5),
        "{:?}",
        faces[0]
    );
    assert!(
        near(faces[0].kps[2][1], 2.0 * TARGET_NOSE[1] + 0.5, 2.5),
        "{:?}",
        faces[0]
    );

    // Moving the face moves the detection: content decides, not the model.
    let mut shifted = RgbImage::from_pixel(640, 480, image::Rgb([40, 40, 48]));
    let face = image::imageops::crop_imm(&card, 300, 150, 200, 200).to_image();
    image::imageops::replace(&mut shifted, &face, 20, 60);
    let faces = engine.detect(&rgb_to_i420(&shifted).unwrap()).unwrap();
    assert_eq!(faces.len(), 1);
    assert!(
        near(faces[0].kps[2][0], TARGET_NOSE[0] - 280.0, 1.0),
        "{:?}",
        faces[0]
    );
    assert!(
        near(faces[0].kps[2][1], TARGET_NOSE[1] - 90.0, 1.0),
        "{:?}",
        faces[0]
    );

    // No face: nothing found.
    let blank = I420Frame::filled(640, 480, 120, 128, 128).unwrap();
    assert!(engine.detect(&blank).unwrap().is_empty());
}

#[test]
fn source_face_latent_is_unit_length_and_identity_specific() {
    let (_g, mut engine, c) = engine();
    let s = source(&mut engine, &c.swap);
    assert!(
        near(s.detection.kps[2][0], SOURCE_NOSE[0], 1.5),
        "{:?}",
        s.detection
    );
    assert!(
        near(s.detection.kps[2][1], SOURCE_NOSE[1], 1.5),
        "{:?}",
        s.detection
    );
    let norm: f32 = s
        .latent()
        .unwrap()
        .iter()
        .map(|v| v * v)
        .sum::<f32>()
        .sqrt();
    assert!(near(norm, 1.0, 1e-4), "{norm}");
    // The target card's face is another identity.
    let card = load_image(&fixture("testcard_target.png"), &c.swap).unwrap();
    let t = engine.source_face(&card).unwrap();
    assert!(t.embedding().unwrap().similarity(s.embedding().unwrap()) < 0.99);
    assert!(near(
        t.embedding().unwrap().similarity(t.embedding().unwrap()),
        1.0,
        1e-5
    ));
    // No face in the photo: a clear error.
    let e = engine
        .source_face(&RgbImage::from_pixel(200, 200, image::Rgb([200, 200, 200])))
        .unwrap_err();
    assert!(matches!(e, SwapError::NoSourceFace(_)), "{e}");
}

#[test]
fn emap_is_read_from_the_swappers_last_initializer() {
    let emap = Emap::from_model_file(&fixture("inswapper_128.onnx")).unwrap();
    // The generator wrote emap[i][j] = sin(0.37 i + 0.11 j) / 16 in float32.
    for (i, j) in [(0, 0), (1, 2), (17, 300), (511, 511), (400, 3)] {
        let want = ((0.37 * i as f64 + 0.11 * j as f64).sin() / 16.0) as f32;
        assert!(near(emap.get(i, j).unwrap(), want, 1e-6), "({i},{j})");
    }
    // Other models' last initializers are no 512x512 float matrix: clear errors.
    let e = Emap::from_model_file(&fixture("w600k_r50.onnx")).unwrap_err();
    assert!(e.to_string().contains("expected [512, 512]"), "{e}");
    let e = Emap::from_model_file(&fixture("det_10g.onnx")).unwrap_err();
    assert!(e.to_string().contains("expected 1 (float)"), "{e}");
}

/// Mean RGB of the frame over a box, converted from I420.
fn mean_rgb(rgb: &RgbImage, x0: u32, y0: u32, x1: u32, y1: u32) -> [f32; 3] {
    let mut sum = [0f32; 3];
    for y in y0..y1 {
        for x in x0..x1 {
            let p = rgb.get_pixel(x, y).0;
            for k in 0..3 {
                sum[k] += f32::from(p[k]);
            }
        }
    }
    let n = ((x1 - x0) * (y1 - y0)) as f32;
    sum.map(|s| s / n)
}

#[test]
fn swap_frame_changes_the_face_and_nothing_else() {
    let (_g, mut engine, c) = engine();
    let s = source(&mut engine, &c.swap);
    let card = load_image(&fixture("testcard_target.png"), &c.swap).unwrap();
    let before = rgb_to_i420(&card).unwrap();
    let mut frame = before.clone();
    let report = engine
        .swap_frame(&mut frame, &s, &Selection::Largest)
        .unwrap();
    assert_eq!(report.detected.len(), 1);
    assert_eq!(report.swapped.len(), 1);
    let [x0, y0, x1, y1] = report.swapped[0].paste_box;
    // The paste box surrounds the face box and is far smaller than the frame.
    assert!(
        x0 as f32 <= TARGET_BOX[0] && y0 as f32 <= TARGET_BOX[1],
        "{x0},{y0}"
    );
    assert!(
        x1 as f32 >= TARGET_BOX[2] && y1 as f32 >= TARGET_BOX[3],
        "{x1},{y1}"
    );
    assert!((x1 - x0) * (y1 - y0) < 640 * 480 / 4);

    // Region 1: outside the paste box, every Y, U and V byte is as it was.
    let w = 640usize;
    for y in 0..480usize {
        for x in 0..w {
            let inside =
                (x0 as usize..x1 as usize).contains(&x) && (y0 as usize..y1 as usize).contains(&y);
            if !inside {
                assert_eq!(before.y()[y * w + x], frame.y()[y * w + x], "Y ({x},{y})");
            }
        }
    }
    for y in 0..240usize {
        for x in 0..320usize {
            let inside = (x0 as usize / 2..x1 as usize / 2).contains(&x)
                && (y0 as usize / 2..y1 as usize / 2).contains(&y);
            if !inside {
                assert_eq!(
                    before.u()[y * 320 + x],
                    frame.u()[y * 320 + x],
                    "U ({x},{y})"
                );
                assert_eq!(
                    before.v()[y * 320 + x],
                    frame.v()[y * 320 + x],
                    "V ({x},{y})"
                );
            }
        }
    }

    // Region 2: the face's core took the fixture swapper's output, 0.3·input + 0.7·colour.
    // So between two patches of the core, the output differs by exactly 0.3 times the input
    // difference, whatever the colour: the cheek (skin) against the magenta nose.
    let rgb_before = i420_to_rgb(&before, 640, 480);
    let rgb_after = i420_to_rgb(&frame, 640, 480);
    let cheek = (350, 250, 362, 262); // skin, left of the nose, inside the fully-opaque mask
    let nose = (394, 244, 406, 256);
    let m = |img: &RgbImage, r: (u32, u32, u32, u32)| mean_rgb(img, r.0, r.1, r.2, r.3);
    let (cb, ca) = (m(&rgb_before, cheek), m(&rgb_after, cheek));
    let (nb, na) = (m(&rgb_before, nose), m(&rgb_after, nose));
    for k in 0..3 {
        let want = 0.3 * (cb[k] - nb[k]);
        assert!(
            near(ca[k] - na[k], want, 6.0),
            "channel {k}: {} vs {want}",
            ca[k] - na[k]
        );
        // ... and it really changed: 70 % of the pixel is the latent's colour now.
        assert!(
            (ca[k] - cb[k]).abs() > 5.0 || (na[k] - nb[k]).abs() > 5.0,
            "channel {k}"
        );
    }

    // Region 3: the colour bars and the grey ramp, far from the face, are untouched in RGB too.
    assert_eq!(
        m(&rgb_before, (0, 0, 640, 60)),
        m(&rgb_after, (0, 0, 640, 60))
    );
    assert_eq!(
        m(&rgb_before, (0, 420, 640, 480)),
        m(&rgb_after, (0, 420, 640, 480))
    );

    // Another identity gives another face colour: the latent drives the swap.
    let card_face = engine.source_face(&card).unwrap();
    let mut other = before.clone();
    engine
        .swap_frame(&mut other, &card_face, &Selection::Largest)
        .unwrap();
    let oa = m(&i420_to_rgb(&other, 640, 480), cheek);
    assert!(
        (0..3).any(|k| (oa[k] - ca[k]).abs() > 3.0),
        "{oa:?} vs {ca:?}"
    );
}

/// The test card with a second, smaller face: a half-size copy of the source photo at the left
/// (its nose near 99.5, 204.5).
fn two_faces(swap: &SwapConfig) -> RgbImage {
    let mut two = load_image(&fixture("testcard_target.png"), swap).unwrap();
    let photo = load_image(&fixture("testcard_source.jpg"), swap).unwrap();
    let small = image::imageops::resize(&photo, 160, 200, image::imageops::FilterType::Triangle);
    image::imageops::replace(&mut two, &small, 20, 100);
    two
}

#[test]
fn selections_all_reference_and_no_face() {
    let (_g, mut engine, c) = engine();
    let s = source(&mut engine, &c.swap);
    let frame = rgb_to_i420(&two_faces(&c.swap)).unwrap();

    let mut f = frame.clone();
    let r = engine.swap_frame(&mut f, &s, &Selection::Largest).unwrap();
    assert_eq!((r.detected.len(), r.swapped.len()), (2, 1));
    assert!(near(r.swapped[0].detection.kps[2][0], TARGET_NOSE[0], 1.0));

    let mut f = frame.clone();
    let r = engine.swap_frame(&mut f, &s, &Selection::All).unwrap();
    assert_eq!(r.swapped.len(), 2);

    // Reference = the source identity: only the small copy of the source face matches.
    let mut f = frame.clone();
    let reference = Selection::Reference {
        embedding: s.embedding().unwrap().clone(),
        min_similarity: 0.9,
    };
    let r = engine.swap_frame(&mut f, &s, &reference).unwrap();
    assert_eq!(r.swapped.len(), 1, "{r:?}");
    assert!(
        r.swapped[0].detection.kps[2][0] < 200.0,
        "{:?}",
        r.swapped[0].detection
    );
    assert!(r.timings.recognize_run > std::time::Duration::ZERO);

    // No face: the frame passes unchanged.
    let blank = I420Frame::filled(320, 240, 90, 120, 130).unwrap();
    let mut f = blank.clone();
    let r = engine.swap_frame(&mut f, &s, &Selection::All).unwrap();
    assert!(r.detected.is_empty() && r.swapped.is_empty());
    assert_eq!(f, blank);

    // Odd geometry: tiny and very wide frames work (or find nothing), never panic.
    for (w, h) in [(2, 2), (4000, 2), (2, 3000), (64, 64)] {
        let mut f = I420Frame::filled(w, h, 16, 128, 128).unwrap();
        engine.swap_frame(&mut f, &s, &Selection::All).unwrap();
    }
}

fn models_with(f: impl FnOnce(&mut ModelsConfig)) -> ModelsConfig {
    let mut m = config().models;
    f(&mut m);
    m
}

#[test]
fn model_loading_explains_missing_corrupt_and_wrong_models() {
    let swap = config().swap;
    let load = |m: &ModelsConfig| Engine::load(m, &swap).err().map(|e| e.to_string());

    let e = load(&models_with(|m| m.swapper = "nope.onnx".into())).unwrap();
    assert!(
        e.contains("swapper model not found") && e.contains("nope.onnx"),
        "{e}"
    );
    assert!(e.contains("facerelay models check"), "{e}");

    let dir = tempdir("corrupt");
    for name in ["det_10g.onnx", "w600k_r50.onnx"] {
        std::fs::copy(fixture(name), dir.join(name)).unwrap();
    }
    std::fs::write(
        dir.join("inswapper_128.onnx"),
        b"\x08\x07garbage, not protobuf",
    )
    .unwrap();
    let e = load(&models_with(|m| m.dir = dir.clone())).unwrap();
    assert!(e.contains("cannot load the swapper model"), "{e}");

    // The recognizer where the swapper belongs: wrong inputs, named in the message.
    std::fs::copy(fixture("w600k_r50.onnx"), dir.join("inswapper_128.onnx")).unwrap();
    let e = load(&models_with(|m| m.dir = dir.clone())).unwrap();
    assert!(e.contains("not a usable swapper model"), "{e}");
    assert!(e.contains("expected 2 inputs"), "{e}");

    // The swapper where the detector belongs.
    let e = load(&models_with(|m| m.detector = "inswapper_128.onnx".into())).unwrap();
    assert!(e.contains("not a usable detector model"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn asking_for_cuda_without_a_gpu_is_a_start_up_error_not_cpu() {
    let swap = config().swap;
    for provider in [Provider::Cuda, Provider::Tensorrt] {
        let m = models_with(|m| m.provider = provider);
        let e = Engine::load(&m, &swap)
            .err()
            .expect("no GPU here: must fail");
        let text = e.to_string();
        assert!(
            matches!(e, SwapError::Infer(InferError::Provider { .. })),
            "{provider}: {text}"
        );
        assert!(text.contains("Refusing to fall back to the CPU"), "{text}");
        assert!(text.contains(&format!("`{provider}`")), "{text}");
    }
}

#[test]
fn broken_cuda_libraries_beside_onnx_runtime_are_a_start_up_error() {
    // The GPU install puts libcudart & co. next to libonnxruntime.so and facerelay preloads
    // them; a damaged one must stop start-up with its name, not fall back to the CPU.
    let lib = config().models.library_path().canonicalize().unwrap();
    let dir = tempdir("gpu-libs");
    std::os::unix::fs::symlink(&lib, dir.join("libonnxruntime.so")).unwrap();
    std::fs::write(dir.join("libcudart.so.13"), b"not a shared object").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_facerelay"))
        .args([
            "swap",
            "--fixtures",
            "--face",
            "a.jpg",
            "--input",
            "b.png",
            "--output",
            "c.png",
        ])
        .env(
            "FACERELAY_MODELS__ONNXRUNTIME_LIBRARY",
            dir.join("libonnxruntime.so"),
        )
        .env("FACERELAY_MODELS__PROVIDER", "cuda")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("execution provider `cuda` did not register"),
        "{err}"
    );
    assert!(err.contains("libcudart.so.13"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `scripts/gpu-check.sh` on a machine whose ONNX Runtime has no CUDA provider refuses loudly
/// (exit 3, the provider's own error in its summary) and measures nothing on the CPU instead;
/// its rehearsal runs every measuring step on the CPU and writes the summary it would write on
/// a GPU, marked as a rehearsal.
#[test]
fn the_gpu_check_refuses_without_a_gpu_provider_and_rehearses_on_the_cpu() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cpu_lib = config().models.library_path().canonicalize().unwrap();
    let run = |out: &Path, env: &[(&str, &str)]| {
        Command::new("bash")
            .arg(root.join("scripts/gpu-check.sh"))
            .arg(out)
            .current_dir(root)
            .env("FACERELAY", env!("CARGO_BIN_EXE_facerelay"))
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let out = tempdir("gpu-check");
    let o = run(
        &out,
        &[("ORT_GPU_DIR", cpu_lib.parent().unwrap().to_str().unwrap())],
    );
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let summary = std::fs::read_to_string(out.join("summary.txt")).unwrap();
    assert!(
        summary.starts_with("REFUSED: the CUDA execution provider did not register")
            && summary.contains("Refusing to fall back to the CPU"),
        "{summary}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert!(json["refused"].as_str().is_some(), "{json}");
    let measured: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("swap-") || n.starts_with("live"))
        .collect();
    assert!(measured.is_empty(), "nothing measured: {measured:?}");

    let out = tempdir("gpu-check-rehearsal");
    let o = run(
        &out,
        &[
            ("GPU_CHECK_REHEARSAL", "1"),
            ("GPU_CHECK_SESSIONS", "1"),
            ("GPU_CHECK_SECONDS", "1"),
            ("GPU_CHECK_FRAMES", "1"),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["rehearsal"], true);
    for variant in ["file", "prepared"] {
        assert_eq!(json["live"][variant][0]["sessions"], 1, "{json}");
        let swap = &json["swap"][format!("cpu-{variant}")];
        assert!(swap[0]["median_ms"]["total"].as_f64().is_some(), "{json}");
    }
    let text = std::fs::read_to_string(out.join("summary.txt")).unwrap();
    assert!(text.starts_with("REHEARSAL"), "{text}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn config_selects_the_provider_from_the_environment() {
    let c = Config::load_with_env(None, [("FACERELAY_MODELS__PROVIDER".into(), "cuda".into())])
        .unwrap();
    assert_eq!(c.models.provider, Provider::Cuda);
    let e = Config::load_with_env(None, [("FACERELAY_MODELS__PROVIDER".into(), "gpu".into())])
        .unwrap_err();
    assert!(e.to_string().contains("gpu"), "{e}");
}

fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("facerelay-it-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn facerelay(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_facerelay"))
        .args(args)
        .output()
        .expect("run facerelay")
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `facerelay swap --fixtures --face FACE --input INPUT --output OUTPUT`.
fn swap_cli(face: &str, input: &str, output: &str) -> std::process::Output {
    facerelay(&[
        "swap",
        "--fixtures",
        "--face",
        face,
        "--input",
        input,
        "--output",
        output,
    ])
}

#[test]
fn swap_command_writes_a_viewable_png() {
    let _c = config();
    let dir = tempdir("cli");
    let out = dir.join("swapped.png");
    let target = fixture("testcard_target.png");
    let face = fixture("testcard_source.jpg");
    let o = swap_cli(path(&face), path(&target), path(&out));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("1 face(s) detected, 1 swapped"));

    // Outside the face's paste area, the watermark's ellipse around it (1.6 times the box) and
    // the label, the PNG equals the input bit for bit (only the pixels the swap changed come
    // from the I420 frame); inside, the face changed.
    let input = image::open(&target).unwrap().to_rgb8();
    let expected_outside = input.clone();
    let got = image::open(&out).unwrap().to_rgb8();
    assert_eq!(got.dimensions(), (640, 480));
    let [lx0, ly0, lx1, ly1] = facerelay::swap::live::label_box(640, 480).unwrap();
    let mut changed = 0;
    for (x, y, p) in got.enumerate_pixels() {
        let (dx, dy) = (
            (x as f32 - 400.0) / 1.6 / 150.0,
            (y as f32 - 250.0) / 1.6 / 150.0,
        );
        let near_face =
            dx * dx + dy * dy <= 1.0 || ((250..550).contains(&x) && (100..400).contains(&y));
        let label = (lx0..lx1).contains(&x) && (ly0..ly1).contains(&y);
        if label {
            continue;
        }
        if !near_face {
            assert_eq!(p, expected_outside.get_pixel(x, y), "({x},{y})");
        } else if p != expected_outside.get_pixel(x, y) {
            changed += 1;
        }
    }
    assert!(changed > 10_000, "{changed}");
    // The magenta nose is gone: the nose centre is no longer magenta-dominant.
    let [r, g, b] = got.get_pixel(400, 250).0;
    let [_, u, v] = rgb_to_yuv(f32::from(r), f32::from(g), f32::from(b));
    assert!(!(u > 170.0 && v > 170.0), "still magenta: {r},{g},{b}");

    // No face in the target / in the source: clear messages and a failing exit status.
    let blank = dir.join("blank.png");
    RgbImage::from_pixel(64, 48, image::Rgb([10, 20, 30]))
        .save(&blank)
        .unwrap();
    let o = swap_cli(path(&face), path(&blank), path(&dir.join("x.png")));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no face found in the target image") && err.contains("blank.png"),
        "{err}"
    );
    let o = swap_cli(path(&blank), path(&target), path(&dir.join("x.png")));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no face found in the source image") && err.contains("blank.png"),
        "{err}"
    );
    // Not an image at all.
    let junk = dir.join("junk.jpg");
    std::fs::write(&junk, b"\xff\xd8\xff not really").unwrap();
    let o = swap_cli(path(&junk), path(&target), path(&dir.join("x.png")));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("junk.jpg"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A swapped picture is disclosed wherever it goes: `verify` finds the watermark in the PNG
/// and the JPEG `swap` writes, and their metadata declares them `compositeSynthetic` by
/// facerelay; the unswapped input has neither.
#[test]
fn swapped_pictures_carry_the_watermark_and_declare_themselves() {
    let _c = config();
    let dir = tempdir("disclosed");
    let target = fixture("testcard_target.png");
    let face = fixture("testcard_source.jpg");
    let plain = facerelay::verify::verify_file(&target).unwrap();
    assert!(!plain.swapped, "the input: {}", plain.describe("input"));
    assert_eq!(plain.declared, None);
    for name in ["swapped.png", "swapped.jpg"] {
        let out = dir.join(name);
        let o = swap_cli(path(&face), path(&target), path(&out));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r = facerelay::verify::verify_file(&out).unwrap();
        let text = r.describe(name);
        print!("{text}");
        assert!(r.swapped, "{text}");
        let declared = r.declared.expect("the metadata declares the swap");
        assert_eq!(
            declared.digital_source_type,
            facerelay::media::xmp::COMPOSITE_SYNTHETIC
        );
        assert!(
            declared.creator_tool.unwrap().starts_with("facerelay "),
            "{text}"
        );
        // The command's own report says the same.
        let o = facerelay(&["verify", path(&out)]);
        let said = String::from_utf8_lossy(&o.stdout);
        assert!(
            said.contains("compositeSynthetic") && said.contains("verdict: swapped by facerelay"),
            "{said}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn swap_command_with_a_reference_face() {
    let c = config();
    let dir = tempdir("cli-ref");
    let input = dir.join("two.png");
    two_faces(&c.swap).save(&input).unwrap();
    let face = fixture("testcard_source.jpg");
    let out = dir.join("out.png");
    let with_reference = |reference: &Path| {
        facerelay(&[
            "swap",
            "--fixtures",
            "--face",
            path(&face),
            "--input",
            path(&input),
            "--output",
            path(&out),
            "--reference",
            path(reference),
        ])
    };
    let o = with_reference(&face);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("2 face(s) detected, 1 swapped"), "{stdout}");
    // Only the small face (left) changed; the card's face (right) did not.
    let before = image::open(&input).unwrap().to_rgb8();
    let after = image::open(&out).unwrap().to_rgb8();
    assert_ne!(after.get_pixel(99, 204), before.get_pixel(99, 204));
    assert_eq!(after.get_pixel(400, 250), before.get_pixel(400, 250));

    let blank = dir.join("blank.png");
    RgbImage::from_pixel(64, 48, image::Rgb([10, 20, 30]))
        .save(&blank)
        .unwrap();
    let o = with_reference(&blank);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no face found in the reference image"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn models_check_reports_missing_files() {
    let o = facerelay(&["models", "check"]);
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    // This checkout carries no deep weights, and the packaged set that setup installs: the
    // deep files are listed as missing, and serve runs the mesh swapper.
    if out.contains("runs the deep swapper") {
        return;
    }
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains("det_10g.onnx") && out.contains("missing"),
        "{out}"
    );
    assert!(
        out.contains("face_landmark.onnx") && out.contains("runs the mesh swapper"),
        "{out}"
    );
}

#[test]
fn bench_swap_prints_a_table_and_json() {
    // A smoke run: the figures themselves are never asserted on.
    let _c = config();
    let o = facerelay(&["bench", "swap", "--fixtures", "--frames", "1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("CPU outside models"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&out[out.find('[').unwrap()..]).unwrap();
    let sizes: Vec<(u64, u64)> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["width"].as_u64().unwrap(), r["height"].as_u64().unwrap()))
        .collect();
    assert_eq!(sizes, [(640, 480), (1280, 720)]);
    for r in json.as_array().unwrap() {
        assert_eq!(r["faces_swapped"], 1);
        assert!(r["median_ms"]["cpu_outside_models"].as_f64().unwrap() > 0.0);
    }
}
