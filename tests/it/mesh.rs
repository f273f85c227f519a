//! The mesh tier on real photos (the packaged set's test photos): landmarks against the
//! photos' ground-truth keypoints, tracking a moving face, landmark jitter on a still one,
//! `facerelay swap --all --json` on 29 faces, and bad input.

use std::path::PathBuf;
use std::sync::Arc;

use facerelay::config::Config;
use facerelay::media::{FrameStage, I420Frame, StreamId, StreamProcessor};
use facerelay::swap::color::rgb_to_i420;
use facerelay::swap::live::LiveSwap;
use facerelay::swap::live::SwapMetrics;
use facerelay::swap::mesh::{five_points, FilterSettings, MeshEngine, MeshFilter, Roi};
use facerelay::swap::picker::{FacePicker, PickError};
use image::RgbImage;

use crate::browser::root;

fn photo(name: &str) -> RgbImage {
    let path = root().join("models/packaged/photos").join(name);
    image::open(&path)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (scripts/setup.sh installs the packaged set)",
                path.display()
            )
        })
        .to_rgb8()
}

fn engine() -> MeshEngine {
    let c = Config::defaults();
    MeshEngine::load(&c.models, &c.swap).expect("the packaged set loads")
}

/// The ground truth the `scrfd` package ships for two of its photos (its tests' keypoints:
/// eyes in image order, nose, mouth corners).
fn truth(name: &str) -> [[f32; 2]; 5] {
    match name {
        "newton.png" => [
            [371.0, 143.0],
            [419.0, 145.0],
            [399.0, 177.0],
            [371.0, 197.0],
            [409.0, 199.0],
        ],
        _ => [
            [469.0, 353.0],
            [594.0, 346.0],
            [549.0, 436.0],
            [487.0, 489.0],
            [589.0, 482.0],
        ],
    }
}

#[test]
fn mesh_landmarks_land_on_the_ground_truth_keypoints() {
    let mut e = engine();
    for name in ["newton.png", "gauss.png"] {
        let frame = rgb_to_i420(&photo(name)).unwrap();
        let faces = e.detect(&frame).unwrap();
        assert_eq!(faces.len(), 1, "{name}: BlazeFace finds the one face");
        let points = e.landmarks(&frame, &faces[0]).unwrap().expect("a mesh");
        let truth = truth(name);
        let eyes = (truth[1][0] - truth[0][0]).hypot(truth[1][1] - truth[0][1]);
        let five = five_points(&points);
        let worst = five
            .iter()
            .zip(&truth)
            .map(|(p, t)| (p[0] - t[0]).hypot(p[1] - t[1]))
            .fold(0.0f32, f32::max);
        println!(
            "{name}: worst of five keypoints {worst:.1} px = {:.3} eye distances",
            worst / eyes
        );
        // Stated bound: a tenth of the distance between the eyes (the truth is itself a
        // detector's estimate, and the mesh's eye centre is the mean of two corners).
        assert!(worst < 0.1 * eyes, "{name}: {worst} px off");
    }
}

fn pan_and_zoom(src: &RgbImage, i: usize, n: usize) -> I420Frame {
    // Over n frames the window slides 60 px right and shrinks to 80 % (the face grows 25 %).
    let t = i as f32 / n as f32;
    let w = 576.0 * (1.0 - 0.2 * t);
    let x0 = 40.0 + 60.0 * t + (576.0 - w) / 2.0;
    let y0 = (432.0 - w * 0.75) / 2.0;
    crop_640x480(src, x0 as u32, y0 as u32, w as u32, (w * 0.75) as u32)
}

/// A window of `src`, scaled to 640×480, as I420.
fn crop_640x480(src: &RgbImage, x: u32, y: u32, w: u32, h: u32) -> I420Frame {
    let crop = image::imageops::crop_imm(src, x, y, w, h).to_image();
    rgb_to_i420(&image::imageops::resize(
        &crop,
        640,
        480,
        image::imageops::FilterType::Triangle,
    ))
    .unwrap()
}

fn mesh_stage(config: &Config) -> (LiveSwap, Arc<SwapMetrics>) {
    let live = LiveSwap::load(&config.models, &config.swap).expect("mesh stage");
    let metrics = live.metrics().clone();
    assert_eq!(live.swapper_name(), "mesh");
    (live, metrics)
}

#[test]
fn a_moving_face_keeps_one_track() {
    let (live, metrics) = mesh_stage(&Config::defaults());
    let source = live.source_face(&photo("gauss.png")).expect("source face");
    live.faces().set("p1", Arc::new(source)).unwrap();
    let detections_before = live.mesh().unwrap().detector.stats().completed;
    let newton = photo("newton.png");
    let mut stage = live.open(StreamId(1), "p1");
    let n = 60;
    for i in 0..n {
        let mut frame = pan_and_zoom(&newton, i, n);
        let before = frame.clone();
        stage.process(&mut frame);
        assert_ne!(frame.y(), before.y(), "frame {i} swapped");
    }
    let detections = live.mesh().unwrap().detector.stats().completed - detections_before;
    assert_eq!(metrics.swapped_frames.get(), n as u64);
    // One detection started the track; the mesh carried it through the whole move.
    assert_eq!(detections, 1, "the detector ran again: the track was lost");
    assert_eq!(metrics.swap_errors.get(), 0);
}

/// A face that jumps between two frames (a busy server skips frames to catch up; a quick turn
/// of the head) is swapped where it lands, not where it was: the mesh, cut around the old
/// place, follows a jump only part of the way or not at all, and the wearer's own face would
/// show beside the swap. A track whose box shows something else than on the frame before is
/// checked by the detector and starts again from it. The swap's centre on the frame after a
/// jump of 50, 100 and 200 px lies within 4 px of where it lies once the face has stood there
/// (before the check: 25 px short at 50, and left 93 px behind at 100).
#[test]
fn a_face_that_jumps_between_two_frames_is_swapped_where_it_lands() {
    let mut config = Config::defaults();
    // Only the swap itself changes pixels: the centre of what changed is the swap's.
    (config.swap.label, config.swap.watermark) = (false, false);
    let (live, metrics) = mesh_stage(&config);
    let source = live.source_face(&photo("gauss.png")).expect("source face");
    live.faces().set("p1", Arc::new(source)).unwrap();
    let newton = photo("newton.png");
    // A 576-px window of the photo, `x` px from its left edge, as a 640-px frame.
    let at = |x: u32| crop_640x480(&newton, x, 0, 576, 432);
    let centre = |stage: &mut Box<dyn StreamProcessor>, x: u32| {
        let mut frame = at(x);
        let before = frame.clone();
        stage.process(&mut frame);
        let (mut sum, mut n) = (0.0, 0.0);
        for (i, (a, b)) in frame.y().iter().zip(before.y()).enumerate() {
            if a.abs_diff(*b) > 12 {
                sum += (i % 640) as f64;
                n += 1.0;
            }
        }
        assert!(
            n > 2000.0,
            "the face at {x} was swapped ({n} pixels changed)"
        );
        sum / n
    };
    for (k, jump) in [45, 90, 180].into_iter().enumerate() {
        let checks = metrics.track_checks.get();
        let mut stage = live.open(StreamId(10 + 2 * k as u64), "p1");
        for _ in 0..5 {
            centre(&mut stage, 0);
        }
        let landed = centre(&mut stage, jump);
        let mut still = live.open(StreamId(11 + 2 * k as u64), "p1");
        let settled = (0..10).map(|_| centre(&mut still, jump)).last().unwrap();
        println!(
            "jump of {jump} px of the photo: swap centre {landed:.1}, settled there {settled:.1}"
        );
        assert!(
            (landed - settled).abs() < 4.0,
            "the swap did not follow the jump: {landed:.1} vs {settled:.1}"
        );
        // The longest jump takes the face out of the mesh's crop: that track ends and the
        // detector finds the face anew, without a check.
        if jump < 180 {
            assert!(metrics.track_checks.get() > checks, "the jump was checked");
        }
    }
}

#[test]
fn landmarks_of_a_still_face_hold_steady() {
    let mut e = engine();
    let newton = photo("newton.png");
    let base = rgb_to_i420(&newton).unwrap();
    let face = e.detect(&base).unwrap()[0];
    let mut raw = e.landmarks(&base, &face).unwrap().unwrap();
    let c = Config::defaults().swap;
    let mut filter = MeshFilter::new(
        FilterSettings {
            min_cutoff: c.filter_min_cutoff,
            beta: c.filter_beta,
        },
        &raw,
    );
    // Camera noise: each frame gets its own ±4 grey levels of deterministic noise on luma.
    let (mut raw_track, mut filtered_track) = (Vec::new(), Vec::new());
    for i in 0..90u32 {
        let mut frame = base.clone();
        {
            let (y, _, _) = frame.planes_mut();
            for (k, p) in y.iter_mut().enumerate() {
                let h = (k as u32 ^ i.wrapping_mul(0x9e37_79b9)).wrapping_mul(2_654_435_761) >> 29;
                *p = p.saturating_add(h as u8).saturating_sub(4);
            }
        }
        let roi = Roi::from_points(&raw).unwrap();
        let mesh = e.track(&frame, &roi).unwrap();
        assert!(mesh.presence > 0.5);
        raw = mesh.points;
        let out = filter.update(&raw, 1.0 / 30.0, 110.0).to_vec();
        if i >= 30 {
            raw_track.push(raw.clone());
            filtered_track.push(out);
        }
    }
    // RMS distance of each landmark from its own mean position, over all landmarks.
    let jitter = |track: &[Vec<[f32; 2]>]| {
        let n = track.len() as f32;
        let mut sum = 0.0f32;
        for k in 0..track[0].len() {
            let mx = track.iter().map(|p| p[k][0]).sum::<f32>() / n;
            let my = track.iter().map(|p| p[k][1]).sum::<f32>() / n;
            sum += track
                .iter()
                .map(|p| (p[k][0] - mx).powi(2) + (p[k][1] - my).powi(2))
                .sum::<f32>()
                / n;
        }
        (sum / track[0].len() as f32).sqrt()
    };
    let (r, f) = (jitter(&raw_track), jitter(&filtered_track));
    println!(
        "still face under camera noise: landmark jitter raw {r:.3} px, filtered {f:.3} px (RMS)"
    );
    assert!(f < 0.5, "filtered jitter {f} px");
    assert!(f <= r, "the filter must not add jitter");
}

#[test]
fn swap_all_json_finds_and_swaps_29_faces_and_leaves_the_rest_identical() {
    let dir = root().join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let input = root().join("models/packaged/photos/solvay_conference_1927.jpg");
    let out = dir.join("solvay-swapped.png");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_facerelay"))
        .args(["swap", "--all", "--json", "--face"])
        .arg(root().join("models/packaged/photos/newton.png"))
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&out)
        .env("FACERELAY_SWAP__MESH_DETECTOR", "scrfd")
        // What the swap itself touches: without the disclosure marks, which go beyond the
        // pasted boxes (the watermark's ellipses, the label; tests/it/swap.rs checks them).
        .env("FACERELAY_SWAP__WATERMARK", "false")
        .env("FACERELAY_SWAP__LABEL", "false")
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(doc["swapper"], "mesh");
    let detected = doc["detected"].as_array().unwrap();
    let swapped = doc["swapped"].as_array().unwrap();
    assert_eq!(detected.len(), 29, "faces in the 1927 Solvay photo");
    assert_eq!(swapped.len(), 29);
    for d in detected {
        assert_eq!(d["kps"].as_array().unwrap().len(), 5);
        assert!(d["score"].as_f64().unwrap() >= 0.5);
    }
    assert_eq!(swapped[0]["mesh"].as_array().unwrap().len(), 468);
    let boxes: Vec<[u32; 4]> = swapped
        .iter()
        .map(|s| serde_json::from_value(s["paste_box"].clone()).unwrap())
        .collect();
    let a = image::open(&input).unwrap().to_rgb8();
    let b = image::open(&out).unwrap().to_rgb8();
    assert_eq!(a.dimensions(), b.dimensions());
    let (mut outside_changed, mut inside_changed) = (0u64, 0u64);
    for (x, y, p) in a.enumerate_pixels() {
        let inside = boxes
            .iter()
            .any(|b| x >= b[0] && x < b[2] && y >= b[1] && y < b[3]);
        let changed = p != b.get_pixel(x, y);
        match (inside, changed) {
            (false, true) => outside_changed += 1,
            (true, true) => inside_changed += 1,
            _ => {}
        }
    }
    assert_eq!(
        outside_changed, 0,
        "pixels outside the pasted boxes changed"
    );
    assert!(
        inside_changed > 29 * 1000,
        "{inside_changed} pixels swapped"
    );
}

#[test]
fn bad_input_to_the_mesh_tier() {
    let config = Config::defaults();
    let (live, metrics) = mesh_stage(&config);
    let picker = FacePicker::live(Arc::new(live.clone()), &config.swap, None);
    // No face: a plain picture.
    let plain = RgbImage::from_pixel(320, 240, image::Rgb([90, 120, 150]));
    let png = |img: &RgbImage| {
        let mut v = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut v), image::ImageFormat::Png)
            .unwrap();
        v
    };
    assert!(matches!(
        picker.from_photo(&png(&plain)),
        Err(PickError::NoFace)
    ));
    // Two faces side by side, each cut square around its face.
    let (n, g) = (photo("newton.png"), photo("gauss.png"));
    let side = |img: &RgbImage, x: u32, y: u32, w: u32| {
        let c = image::imageops::crop_imm(img, x, y, w, w).to_image();
        image::imageops::resize(&c, 240, 240, image::imageops::FilterType::Triangle)
    };
    let mut two = RgbImage::new(480, 240);
    image::imageops::replace(&mut two, &side(&n, 256, 30, 260), 0, 0);
    image::imageops::replace(&mut two, &side(&g, 265, 135, 500), 240, 0);
    match picker.from_photo(&png(&two)) {
        Err(PickError::SeveralFaces(k)) => assert_eq!(k, 2),
        other => panic!("two faces: {:?}", other.map(|_| ())),
    }
    // One face: accepted, with a preview.
    let chosen = picker.from_photo(&png(&g)).expect("one face");
    assert!(!chosen.preview_png.is_empty());

    // A face cut by the frame's edge, and a frame with no face: no panic; the faceless frame
    // of a participant with a chosen face fails closed (held or blurred, never sent as it is).
    live.faces().set("p1", chosen.source.clone()).unwrap();
    let mut stage = live.open(StreamId(7), "p1");
    let edge = crop_640x480(&n, 300, 0, 426, 320);
    for _ in 0..5 {
        let mut f = edge.clone();
        stage.process(&mut f);
    }
    let empty = rgb_to_i420(&image::imageops::resize(
        &plain,
        640,
        480,
        image::imageops::FilterType::Nearest,
    ))
    .unwrap();
    let closed = |m: &SwapMetrics| m.held_frames.get() + m.blurred_frames.get();
    let before = closed(&metrics);
    let mut f = empty.clone();
    stage.process(&mut f);
    assert_ne!(f, empty, "a frame without a face is not sent as it came");
    assert_eq!(closed(&metrics), before + 1);

    // A crop that shows no face (the tracker's view when a face turns away or leaves): the
    // mesh's presence is below the threshold, so the track ends there.
    let mut e = engine();
    let frame = rgb_to_i420(&n).unwrap();
    let away = Roi {
        cx: 100.0,
        cy: 330.0,
        side: 160.0,
        angle: 0.0,
    };
    let mesh = e.track(&frame, &away).unwrap();
    println!(
        "presence on the painting's dark corner: {:.3}",
        mesh.presence
    );
    assert!(mesh.presence < config.swap.mesh_presence);
}

#[test]
fn a_damaged_packaged_model_is_a_start_up_error() {
    let tmp = std::env::temp_dir().join(format!("facerelay-packaged-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let packaged = root().join("models/packaged");
    for f in ["blazeface.onnx", "face_mesh_topology.json", "scrfd.onnx"] {
        std::fs::copy(packaged.join(f), tmp.join(f)).unwrap();
    }
    let mesh = std::fs::read(packaged.join("face_landmark.onnx")).unwrap();
    std::fs::write(tmp.join("face_landmark.onnx"), &mesh[..mesh.len() / 2]).unwrap();
    let mut config = Config::defaults();
    config.models.packaged_dir = PathBuf::from(&tmp);
    let err = LiveSwap::load(&config.models, &config.swap)
        .err()
        .expect("a truncated mesh model must not load");
    println!("{err}");
    assert!(err.to_string().contains("face_landmark.onnx"), "{err}");
    // `facerelay models check` agrees: the set is damaged and serve would refuse it.
    let toml = tmp.join("config.toml");
    std::fs::write(
        &toml,
        format!("[models]\npackaged_dir = {:?}\n", tmp.display().to_string()),
    )
    .unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_facerelay"))
        .args(["models", "check", "--config"])
        .arg(&toml)
        .current_dir(root())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout).to_string()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success(), "{text}");
    assert!(
        text.contains("face_landmark.onnx") && text.contains("wrong"),
        "{text}"
    );
    assert!(text.contains("refuses to start"), "{text}");
    // And on the installed set it says which swapper serve runs.
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_facerelay"))
        .args(["models", "check"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).contains("runs the mesh swapper"));
    std::fs::write(tmp.join("face_landmark.onnx"), &mesh).unwrap();
    std::fs::write(tmp.join("face_mesh_topology.json"), "{\"triangles\": []}").unwrap();
    let err = LiveSwap::load(&config.models, &config.swap)
        .err()
        .expect("a broken topology must not load");
    assert!(err.to_string().contains("topology"), "{err}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[tokio::test]
async fn serve_runs_the_mesh_swapper_on_the_packaged_set_and_says_so() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    // The server as `scripts/serve.sh` runs it: no deep model in models/, the packaged set in
    // models/packaged/ (scripts/setup.sh put it there).
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_facerelay"))
        .arg("serve")
        .env("FACERELAY_SERVER__LISTEN", "127.0.0.1:0")
        .env_remove("NO_COLOR")
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut log, mut addr) = (String::new(), None);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    // The log line comes on stderr before the address on stdout; either may be read first.
    while addr.is_none() || !log.contains("face swap on") {
        tokio::select! {
            line = out.next_line() => {
                let line = line.unwrap().expect("the server prints its address");
                addr = line.strip_prefix("facerelay listening on ").map(|a| a.trim_end_matches('/').to_owned());
            }
            line = err.next_line() => {
                if let Some(l) = line.unwrap() { log.push_str(&l); log.push('\n'); }
            }
            _ = tokio::time::sleep_until(deadline) => panic!("no address or no swap line within 30 s; log:\n{log}"),
        }
    }
    let addr = addr.unwrap();
    assert!(
        log.contains("face swap on") && log.contains("swapper=\"mesh\""),
        "log:\n{log}"
    );
    // The log is not a terminal: no colour codes in it.
    assert!(!log.contains('\u{1b}'), "ANSI codes in a piped log:\n{log}");
    let health = crate::support::http_get(&format!("{addr}/healthz")).await;
    assert!(health.contains("\"swapper\":\"mesh\""), "{health}");
    let gallery = crate::support::http_get(&format!("{addr}/api/gallery")).await;
    assert!(
        gallery.contains("\"available\":true") && gallery.contains("\"swapper\":\"mesh\""),
        "{gallery}"
    );
    child.kill().await.unwrap();
}

/// A deep-tier models folder whose detector is the packaged SCRFD (it finds real faces) and
/// whose recognizer and swapper are the committed stand-ins (the swapper tints the face).
fn deep_models_on_real_faces(tag: &str) -> (Config, PathBuf) {
    let tmp = std::env::temp_dir().join(format!("facerelay-deep-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::copy(
        root().join("models/packaged/scrfd.onnx"),
        tmp.join("det_10g.onnx"),
    )
    .unwrap();
    for f in ["w600k_r50.onnx", "inswapper_128.onnx"] {
        std::fs::copy(root().join("models/fixtures").join(f), tmp.join(f)).unwrap();
    }
    let mut c = Config::defaults();
    c.models.dir = tmp.clone();
    c.swap.swapper = facerelay::swap::SwapperChoice::Deep(&facerelay::swap::swapper::INSWAPPER_128);
    (c, tmp)
}

/// Which pixels of the frame a deep swap changed.
fn changed(config: &Config, frame: &I420Frame, source: &RgbImage) -> Vec<bool> {
    let mut engine = facerelay::swap::Engine::load(&config.models, &config.swap).unwrap();
    let s = engine.source_face(source).unwrap();
    let mut out = frame.clone();
    let r = engine
        .swap_frame(&mut out, &s, &facerelay::swap::Selection::Largest)
        .unwrap();
    assert_eq!(r.swapped.len(), 1);
    frame.y().iter().zip(out.y()).map(|(a, b)| a != b).collect()
}

#[test]
fn the_deep_swapper_pastes_through_the_face_oval_of_the_mesh() {
    let (mut config, tmp) = deep_models_on_real_faces("oval");
    let newton = photo("newton.png");
    let frame = rgb_to_i420(&newton).unwrap();
    // The face oval of Newton's mesh, as a pixel mask.
    let mut e = engine();
    let face = e.detect(&frame).unwrap()[0];
    let points = e.landmarks(&frame, &face).unwrap().unwrap();
    let topo = facerelay::swap::mesh::Topology::load(
        &root().join("models/packaged/face_mesh_topology.json"),
    )
    .unwrap();
    let oval: Vec<[f32; 2]> = topo.face_oval.iter().map(|&i| points[i as usize]).collect();
    let w = frame.width() as usize;
    let inside = |i: usize, grow: f32| {
        // Point-in-polygon by ray casting, with the polygon grown around its centre.
        let c = oval
            .iter()
            .fold([0.0f32; 2], |a, p| [a[0] + p[0], a[1] + p[1]]);
        let c = [c[0] / oval.len() as f32, c[1] / oval.len() as f32];
        let poly: Vec<[f32; 2]> = oval
            .iter()
            .map(|p| {
                let (dx, dy) = (p[0] - c[0], p[1] - c[1]);
                let l = dx.hypot(dy).max(1e-3);
                [p[0] + dx / l * grow, p[1] + dy / l * grow]
            })
            .collect();
        let (x, y) = ((i % w) as f32, (i / w) as f32);
        let mut ins = false;
        for k in 0..poly.len() {
            let (a, b) = (poly[k], poly[(k + 1) % poly.len()]);
            if (a[1] > y) != (b[1] > y) && x < a[0] + (y - a[1]) / (b[1] - a[1]) * (b[0] - a[0]) {
                ins = !ins;
            }
        }
        ins
    };
    let gauss = photo("gauss.png");
    config.swap.deep_mask = facerelay::swap::DeepMask::Square;
    let square = changed(&config, &frame, &gauss);
    config.swap.deep_mask = facerelay::swap::DeepMask::Oval;
    let by_oval = changed(&config, &frame, &gauss);
    let count = |v: &[bool], f: &dyn Fn(usize) -> bool| {
        v.iter().enumerate().filter(|(i, &c)| c && f(*i)).count()
    };
    let oval_px = (0..by_oval.len()).filter(|&i| inside(i, 0.0)).count();
    let (sq_in, ov_in) = (
        count(&square, &|i| inside(i, 0.0)),
        count(&by_oval, &|i| inside(i, 0.0)),
    );
    let (sq_out, ov_out) = (
        count(&square, &|i| !inside(i, 3.0)),
        count(&by_oval, &|i| !inside(i, 3.0)),
    );
    println!(
        "face oval {oval_px} px: square mask changes {sq_in} inside / {sq_out} outside, oval mask {ov_in} inside / {ov_out} outside"
    );
    // This test's mesh comes from another crop than the engine's, so the two ovals differ by
    // a pixel or two: a handful of changed pixels just past the 3 px margin is that, not a
    // mask that reaches past the face.
    assert!(
        ov_out * 100 < oval_px,
        "the oval mask changed {ov_out} pixels beyond the face oval"
    );
    assert!(
        sq_out > 500,
        "the square mask reaches past the face ({sq_out} px)"
    );
    assert!(
        ov_in as f32 > 0.9 * oval_px as f32,
        "the oval mask keeps the whole face ({ov_in}/{oval_px})"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn the_mouth_mask_keeps_an_open_mouth_and_colour_matching_pulls_toward_the_skin() {
    let newton = photo("newton.png");
    let frame = rgb_to_i420(&newton).unwrap();
    let mut e = engine();
    let face = e.detect(&frame).unwrap()[0];
    let mut points = e.landmarks(&frame, &face).unwrap().unwrap();
    let topo = facerelay::swap::mesh::Topology::load(
        &root().join("models/packaged/face_mesh_topology.json"),
    )
    .unwrap();
    // Open the mouth: move the lower half of the inner lip outline 12 px down.
    let lips: Vec<usize> = topo.lips_inner.iter().map(|&i| i as usize).collect();
    let mid = lips.iter().map(|&i| points[i][1]).sum::<f32>() / lips.len() as f32;
    for &i in &lips {
        if points[i][1] >= mid {
            points[i][1] += 12.0;
        }
    }
    let five = five_points(&points);
    let to_crop = facerelay::swap::geometry::similarity(
        &five,
        &facerelay::swap::geometry::arcface_template(128),
    )
    .unwrap();
    let square = facerelay::swap::paste::Mask::new(128, 12, 4.0);
    let inner: Vec<[f32; 2]> = lips.iter().map(|&i| to_crop.apply(points[i])).collect();
    let centre = inner.iter().fold([0.0f32; 2], |a, p| {
        [
            a[0] + p[0] / inner.len() as f32,
            a[1] + p[1] / inner.len() as f32,
        ]
    });
    let at =
        |m: &facerelay::swap::paste::Mask| m.alpha()[centre[1] as usize * 128 + centre[0] as usize];
    let kept = facerelay::swap::mesh::crop_mask(&square, &to_crop, &points, &topo, 0.06, true);
    let swapped = facerelay::swap::mesh::crop_mask(&square, &to_crop, &points, &topo, 0.06, false);
    println!(
        "mask at the open mouth's centre: {:.2} with the mouth mask, {:.2} without",
        at(&kept),
        at(&swapped)
    );
    assert!(
        at(&kept) < 0.25,
        "the open mouth is kept (the feathered edge aside)"
    );
    assert_eq!(at(&swapped), 1.0);

    // Colour matching: the stand-in swapper tints the face; matched, the face's mean colour
    // moves back toward the wearer's skin.
    let (mut config, tmp) = deep_models_on_real_faces("colour");
    let mean_uv = |matched: bool, config: &mut Config| {
        config.swap.deep_colour_match = matched;
        let mut engine = facerelay::swap::Engine::load(&config.models, &config.swap).unwrap();
        let s = engine.source_face(&photo("gauss.png")).unwrap();
        let mut out = frame.clone();
        engine
            .swap_frame(&mut out, &s, &facerelay::swap::Selection::Largest)
            .unwrap();
        let (mut du, mut n) = (0.0f64, 0.0f64);
        for (a, b) in frame
            .u()
            .iter()
            .zip(out.u())
            .chain(frame.v().iter().zip(out.v()))
        {
            if a != b {
                du += (f64::from(*a) - f64::from(*b)).abs();
                n += 1.0;
            }
        }
        du / n.max(1.0)
    };
    let plain = mean_uv(false, &mut config);
    let matched = mean_uv(true, &mut config);
    println!("mean chroma change of swapped pixels: {plain:.1} without colour matching, {matched:.1} with");
    assert!(
        matched < 0.5 * plain,
        "colour matching should pull the tint back toward the skin"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}
