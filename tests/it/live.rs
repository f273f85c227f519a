//! The live frame stage (`swap::live`) on the test card with the stand-in models of
//! models/fixtures/ on the CPU: pass-through without a face, the swap as the offline engine
//! does it, detection cadence, failing models, the disclosure label, and the whole decode ▸
//! swap ▸ encode pipeline.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use facerelay::config::Config;
use facerelay::infer::scheduler::Scheduler;
use facerelay::media::pipeline::{
    CodecPool, InputUnit, OutputSink, OutputUnit, Pipeline, PipelineSettings,
};
use facerelay::media::{
    EncoderSettings, FrameStage, I420Frame, StreamId, VideoDecoder, VideoEncoder,
};
use facerelay::metrics::Counter;
use facerelay::swap::color::rgb_to_i420;
use facerelay::swap::live::SwapMetrics;
use facerelay::swap::live::{label_box, DetectRunner, LiveModels, LiveSwap, OnFailure, SwapRunner};
use facerelay::swap::{
    fixtures_dir, load_image, Detection, Engine, Selection, SourceFace, SwapConfig, SwapError,
};

/// The paste box of the test card's face (the engine reports [282, 118, 516, 352)) and a few
/// pixels around it for the smoothed keypoints: nothing outside it may change when the face is
/// swapped (label aside).
const FACE_AREA: [usize; 4] = [276, 112, 522, 358];

fn config(f: impl FnOnce(&mut SwapConfig)) -> Config {
    let mut c = crate::swap::config();
    // Generous: a loaded test machine must not turn a swap into a counted timeout.
    c.swap.timeout_ms = 20_000;
    // These tests compare the live stage with the offline engine pixel for pixel; the
    // watermark, which only the live stage adds, has its own tests (real_faces.rs, verify).
    c.swap.watermark = false;
    f(&mut c.swap);
    c
}

/// One model user at a time, shared with the engine's tests: runs spread over every core.
fn lock() -> MutexGuard<'static, ()> {
    crate::swap::one_at_a_time()
}

fn stage(c: &Config) -> (LiveSwap, Arc<SwapMetrics>) {
    let live = LiveSwap::load(&c.models, &c.swap).expect("fixture models load");
    let metrics = live.metrics().clone();
    (live, metrics)
}

fn card(c: &Config) -> I420Frame {
    let img = load_image(&fixtures_dir().join("testcard_target.png"), &c.swap).unwrap();
    rgb_to_i420(&img).unwrap()
}

fn source(live: &LiveSwap, c: &Config) -> Arc<SourceFace> {
    let photo = load_image(&fixtures_dir().join("testcard_source.jpg"), &c.swap).unwrap();
    Arc::new(live.source_face(&photo).expect("source face"))
}

fn count(c: &Counter) -> u64 {
    c.get()
}

fn in_box(x: usize, y: usize, b: [usize; 4]) -> bool {
    x >= b[0] && x < b[2] && y >= b[1] && y < b[3]
}

/// Y bytes that differ, outside `allowed` boxes.
fn changed_outside(a: &I420Frame, b: &I420Frame, allowed: &[[usize; 4]]) -> usize {
    let w = a.width() as usize;
    (0..a.y().len())
        .filter(|&i| a.y()[i] != b.y()[i] && !allowed.iter().any(|&bx| in_box(i % w, i / w, bx)))
        .count()
}

fn label_area(f: &I420Frame) -> [usize; 4] {
    label_box(f.width(), f.height())
        .unwrap()
        .map(|v| v as usize)
}

#[test]
fn a_stream_without_a_face_passes_bit_exact_and_calls_no_model() {
    let _g = lock();
    let c = config(|_| {});
    let (live, metrics) = stage(&c);
    let mut p = live.open(StreamId(1), "p1");
    let before = card(&c);
    for _ in 0..4 {
        let mut f = before.clone();
        p.process(&mut f);
        assert_eq!(f, before);
    }
    assert_eq!(live.deep().unwrap().detector.stats().batches, 0);
    assert_eq!(live.deep().unwrap().swapper.stats().batches, 0);
    assert_eq!(count(&metrics.swapped_frames), 0);
}

#[test]
fn the_live_swap_is_the_engines_swap_and_leaves_the_rest_alone() {
    let _g = lock();
    let c = config(|s| s.label = false);
    let (live, metrics) = stage(&c);
    let s = source(&live, &c);
    // The offline engine computes the same source identity and the same swapped frame.
    let mut engine = Engine::load(&c.models, &c.swap).unwrap();
    let photo = load_image(&fixtures_dir().join("testcard_source.jpg"), &c.swap).unwrap();
    let offline_source = engine.source_face(&photo).unwrap();
    assert_eq!(offline_source.latent().unwrap(), s.latent().unwrap());
    let before = card(&c);
    let mut offline = before.clone();
    let report = engine
        .swap_frame(&mut offline, &offline_source, &Selection::Largest)
        .unwrap();
    assert_eq!(report.swapped.len(), 1);

    live.faces().set("p1", s).unwrap();
    let mut p = live.open(StreamId(2), "p1");
    let mut f = before.clone();
    p.process(&mut f);
    assert_eq!(
        f, offline,
        "first frame: raw detection, so exactly the engine's result"
    );
    assert_ne!(f, before);
    let pasted = report.swapped[0].paste_box.map(|v| v as usize);
    assert_eq!(changed_outside(&before, &f, &[pasted]), 0);
    assert_eq!(count(&metrics.swapped_frames), 1);
    assert_eq!(metrics.swap_detect.count(), 1);
    assert_eq!(metrics.swap_swap.count(), 1);

    // The face is cleared mid-call: the next frame passes through untouched.
    assert!(live.faces().clear("p1"));
    let mut f = before.clone();
    p.process(&mut f);
    assert_eq!(f, before);
}

#[test]
fn detection_runs_every_n_frames_and_every_frame_is_swapped() {
    let _g = lock();
    let c = config(|s| s.detect_every = 3);
    let (live, metrics) = stage(&c);
    live.faces().set("p1", source(&live, &c)).unwrap();
    let detections_for_source = live.deep().unwrap().detector.stats().completed;
    let mut p = live.open(StreamId(3), "p1");
    let before = card(&c);
    for _ in 0..9 {
        let mut f = before.clone();
        p.process(&mut f);
        assert_ne!(f, before);
    }
    // Frame 0 waited for its detection; those of frames 3 and 6 ran in the background.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let detections = || live.deep().unwrap().detector.stats().completed - detections_for_source;
    while detections() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(detections(), 3, "frames 0, 3 and 6");
    assert_eq!(
        live.deep().unwrap().detector.stats().batches - detections_for_source,
        3
    );
    assert_eq!(live.deep().unwrap().swapper.stats().completed, 9);
    assert_eq!(count(&metrics.swapped_frames), 9);
    assert_eq!(count(&metrics.swap_errors), 0);
    let mut registry = facerelay::metrics::Registry::default();
    live.register_metrics(&mut registry);
    let text = facerelay::metrics::render(&registry);
    assert!(
        text.contains("facerelay_swap_stage_seconds_count{stage=\"swap\"} 9\n"),
        "{text}"
    );
    assert!(
        text.contains("facerelay_infer_batches_total{model=\"swapper\",size=\"1\"} 9\n"),
        "{text}"
    );

    // A frame without a face costs one detection per `detect_every`; with no face ever found
    // on this stream it fails closed: the whole frame pixelated (a flat frame stays flat) and
    // the label drawn.
    let blank = I420Frame::filled(640, 480, 90, 120, 130).unwrap();
    let mut p = live.open(StreamId(4), "p1");
    let det_before = live.deep().unwrap().detector.stats().completed;
    for _ in 0..6 {
        let mut f = blank.clone();
        p.process(&mut f);
        assert_eq!(changed_outside(&blank, &f, &[label_area(&f)]), 0);
        assert_ne!(f, blank, "the label");
    }
    assert_eq!(
        live.deep().unwrap().detector.stats().completed - det_before,
        2
    );
    assert_eq!(count(&metrics.blurred_frames), 6);
}

#[test]
fn the_label_is_drawn_only_on_swapped_frames_and_only_when_configured() {
    let _g = lock();
    let before = card(&config(|_| {}));
    let lb = label_area(&before);
    for label in [true, false] {
        let c = config(|s| s.label = label);
        let (live, _) = stage(&c);
        live.faces().set("p1", source(&live, &c)).unwrap();
        let mut p = live.open(StreamId(5), "p1");
        let mut f = before.clone();
        p.process(&mut f);
        let w = 640;
        let label_changed = (lb[1]..lb[3])
            .flat_map(|y| (lb[0]..lb[2]).map(move |x| y * w + x))
            .filter(|&i| f.y()[i] != before.y()[i])
            .count();
        if label {
            // Badge and text: nearly every byte of the box is rewritten.
            assert!(
                label_changed > (lb[2] - lb[0]) * (lb[3] - lb[1]) / 2,
                "{label_changed}"
            );
        } else {
            assert_eq!(label_changed, 0);
        }
        assert_eq!(changed_outside(&before, &f, &[FACE_AREA, lb]), 0);
    }
    // No face in view: the frame fails closed (pixelated; flat here) and is labelled; with
    // `on_failure = "pass"` it goes out as it is, without the label.
    for (policy, labelled) in [(OnFailure::Blur, true), (OnFailure::Pass, false)] {
        let c = config(|s| {
            s.label = true;
            s.on_failure = policy;
        });
        let (live, _) = stage(&c);
        live.faces().set("p1", source(&live, &c)).unwrap();
        let blank = I420Frame::filled(640, 480, 90, 120, 130).unwrap();
        let mut f = blank.clone();
        live.open(StreamId(6), "p1").process(&mut f);
        assert_eq!(f != blank, labelled, "{policy:?}");
        assert_eq!(changed_outside(&blank, &f, &[lb]), 0);
    }
}

/// The stage over stand-in runners (no recognizer).
fn stand_in_stage(
    c: &Config,
    detector: Scheduler<DetectRunner>,
    swapper: Scheduler<SwapRunner>,
) -> (LiveSwap, Arc<SwapMetrics>) {
    let models = LiveModels {
        contract: &facerelay::swap::swapper::INSWAPPER_128,
        detector: Arc::new(detector),
        swapper: Arc::new(swapper),
        recognizer: None,
        mesh: None,
    };
    let live = LiveSwap::with_models(models, &c.swap);
    let metrics = live.metrics().clone();
    (live, metrics)
}

fn stand_in_face(c: &Config) -> Detection {
    // The fixture detector's answer on the card, computed once with the real stand-in model.
    let mut engine = Engine::load(&c.models, &c.swap).unwrap();
    engine.detect(&card(c)).unwrap()[0]
}

/// Y-PSNR of two frames inside a box.
fn psnr_in(a: &I420Frame, b: &I420Frame, bx: [usize; 4]) -> f64 {
    let w = a.width() as usize;
    let (mut se, mut n) = (0.0f64, 0.0f64);
    for y in bx[1]..bx[3] {
        for x in bx[0]..bx[2] {
            let d = f64::from(a.y()[y * w + x]) - f64::from(b.y()[y * w + x]);
            se += d * d;
            n += 1.0;
        }
    }
    10.0 * (255.0f64 * 255.0 / (se / n).max(1e-9)).log10()
}

#[test]
fn failing_models_never_send_the_original_face() {
    let _g = lock();
    let c = config(|_| {});
    let face = stand_in_face(&c);
    let settings = c.swap.scheduler_settings(1);
    let photo_source = {
        let (live, _) = stage(&c);
        source(&live, &c)
    };
    // (what, detector fails, detector finds nothing, swapper panics, swapper too slow)
    let cases: [(&str, bool, bool, bool, bool); 5] = [
        ("detector fails", true, false, false, false),
        ("no face found", false, true, false, false),
        ("swapper fails", false, false, false, false),
        ("swapper panics", false, false, true, false),
        ("swapper times out", false, false, false, true),
    ];
    for policy in [OnFailure::Hold, OnFailure::Blur, OnFailure::Pass] {
        for (what, detector_fails, no_face, panics, slow) in cases {
            let c = config(|s| {
                s.on_failure = policy;
                s.timeout_ms = 100;
            });
            let detector = Scheduler::spawn("detector", settings, move |_| {
                Ok::<_, SwapError>(DetectRunner::new(move |_| {
                    if detector_fails {
                        Err(SwapError::ModelOutput("stand-in detector failure".into()))
                    } else if no_face {
                        Ok(vec![])
                    } else {
                        Ok(vec![face])
                    }
                }))
            })
            .unwrap();
            let swapper = Scheduler::spawn("swapper", c.swap.scheduler_settings(1), move |_| {
                Ok::<_, SwapError>(SwapRunner::new(move |_, _, _| {
                    if panics {
                        panic!("stand-in swapper bug");
                    }
                    if slow {
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    Err(SwapError::ModelOutput("stand-in swapper failure".into()))
                }))
            })
            .unwrap();
            let (live, metrics) = stand_in_stage(&c, detector, swapper);
            live.faces().set("p1", photo_source.clone()).unwrap();
            let mut p = live.open(StreamId(7), "p1");
            let before = card(&c);
            for _ in 0..3 {
                let mut f = before.clone();
                p.process(&mut f);
                let face_psnr = psnr_in(&f, &before, FACE_AREA);
                if policy == OnFailure::Pass {
                    assert_eq!(f, before, "{what}, {policy:?}");
                } else {
                    // Nothing was swapped yet, so hold falls back to blur: the face area is
                    // pixelated, far from the original face.
                    assert!(
                        face_psnr < 20.0,
                        "{what}, {policy:?}: face area {face_psnr:.1} dB"
                    );
                }
            }
            let errors = if no_face { 0 } else { 3 };
            assert_eq!(count(&metrics.swap_errors), errors, "{what}, {policy:?}");
            assert_eq!(count(&metrics.swapped_frames), 0, "{what}, {policy:?}");
            let (closed, open) = (
                count(&metrics.blurred_frames),
                count(&metrics.unswapped_frames),
            );
            match policy {
                OnFailure::Pass => assert_eq!((closed, open), (0, 3), "{what}"),
                _ => assert_eq!((closed, open), (3, 0), "{what}, {policy:?}"),
            }
            // Without a recognizer, source faces are a clear error, not a panic.
            let e = live.source_face(&image::RgbImage::new(8, 8)).unwrap_err();
            assert_eq!(e.code(), "swap_unavailable");
        }
    }
}

#[test]
fn uploaded_source_faces_are_checked() {
    let _g = lock();
    let c = config(|_| {});
    let (live, _) = stage(&c);
    assert_eq!(
        live.source_face_from_bytes(b"not an image")
            .unwrap_err()
            .code(),
        "bad_image"
    );
    let mut png = Vec::new();
    image::RgbImage::from_pixel(64, 64, image::Rgb([200, 200, 200]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    assert_eq!(
        live.source_face_from_bytes(&png).unwrap_err().code(),
        "no_face"
    );
    let jpeg = std::fs::read(fixtures_dir().join("testcard_source.jpg")).unwrap();
    let s = live.source_face_from_bytes(&jpeg).unwrap();
    assert_eq!(s.latent().unwrap().len(), 512);
}

struct Collect(std::sync::mpsc::Sender<OutputUnit>);
impl OutputSink for Collect {
    fn send(&mut self, unit: OutputUnit) -> bool {
        self.0.send(unit).is_ok()
    }
}

#[test]
fn decode_swap_encode_through_a_pipeline() {
    let _g = lock();
    let c = config(|_| {});
    let (live, metrics) = stage(&c);
    live.faces().set("p1", source(&live, &c)).unwrap();
    let encoder = EncoderSettings {
        bitrate_bps: 2_000_000,
        max_frame_rate: 30.0,
        keyframe_interval: 0,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let pipeline = Pipeline::spawn(
        StreamId(8),
        PipelineSettings {
            encoder,
            max_frame_pixels: 640 * 480,
        },
        CodecPool::new(1),
        Arc::default(),
        live.open(StreamId(8), "p1"),
        Collect(tx),
    )
    .unwrap();
    let before = card(&c);
    let mut enc = VideoEncoder::new(encoder).unwrap();
    let mut dec = VideoDecoder::new(640 * 480).unwrap();
    for i in 0..3u32 {
        let e = enc.encode(&before, i == 0).unwrap();
        // One frame at a time, so none is dropped as stale.
        assert!(pipeline.push(InputUnit {
            data: e.data.into(),
            timestamp: i * 3000,
            keyframe: e.keyframe,
            arrived: std::time::Instant::now(),
        }));
        let out = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a frame out");
        let pic = dec.decode(&out.data).unwrap().expect("a picture");
        // The label is there (text pixels are bright after H.264) and the face changed.
        let lb = label_area(&pic);
        let bright = (lb[1]..lb[3])
            .flat_map(|y| (lb[0]..lb[2]).map(move |x| y * 640 + x))
            .filter(|&i| pic.y()[i] > 180)
            .count();
        assert!(bright > 100, "frame {i}: {bright} bright label pixels");
    }
    assert_eq!(count(&metrics.swapped_frames), 3);
}

#[test]
fn a_resolution_change_starts_a_fresh_detection() {
    let _g = lock();
    let c = config(|s| s.detect_every = 30);
    let (live, metrics) = stage(&c);
    live.faces().set("p1", source(&live, &c)).unwrap();
    let det0 = live.deep().unwrap().detector.stats().completed;
    let mut p = live.open(StreamId(9), "p1");
    let mut f = card(&c);
    p.process(&mut f);
    let img = load_image(&fixtures_dir().join("testcard_target.png"), &c.swap).unwrap();
    let big = image::imageops::resize(&img, 1280, 960, image::imageops::FilterType::Triangle);
    let big = rgb_to_i420(&big).unwrap();
    let mut f = big.clone();
    p.process(&mut f);
    assert_ne!(f, big);
    assert_eq!(live.deep().unwrap().detector.stats().completed - det0, 2);
    assert_eq!(count(&metrics.swapped_frames), 2);
}

#[test]
fn start_up_fails_loudly_on_a_missing_or_wrong_model_or_an_absent_gpu() {
    let _g = lock();
    let load = |f: &dyn Fn(&mut Config)| {
        let mut c = config(|_| {});
        f(&mut c);
        LiveSwap::load(&c.models, &c.swap)
            .err()
            .map(|e| e.to_string())
            .expect("must not start")
    };
    let e = load(&|c| c.models.swapper = "nope.onnx".into());
    assert!(e.contains("swapper") && e.contains("nope.onnx"), "{e}");
    // The recognizer where the swapper belongs: a contract error, named.
    let e = load(&|c| c.models.swapper = "w600k_r50.onnx".into());
    assert!(e.contains("not a usable swapper model"), "{e}");
    let e = load(&|c| c.swap.detect_every = 0);
    assert!(e.contains("swap.detect_every"), "{e}");
    // No GPU on the test machines: asking for one is an error, never the CPU in silence.
    let e = load(&|c| c.models.provider = facerelay::infer::Provider::Cuda);
    assert!(e.contains("Refusing to fall back to the CPU"), "{e}");
}

#[test]
fn a_background_detection_that_fails_drops_the_track() {
    let _g = lock();
    let c = config(|s| s.detect_every = 1);
    let face = stand_in_face(&c);
    let settings = c.swap.scheduler_settings(1);
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let detector = Scheduler::spawn("detector", settings, move |_| {
        let calls = counted.clone();
        Ok::<_, SwapError>(DetectRunner::new(move |_| {
            // The first detection finds the face, every later one fails.
            match calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 => Ok(vec![face]),
                _ => Err(SwapError::ModelOutput("stand-in detector failure".into())),
            }
        }))
    })
    .unwrap();
    let swapper = Scheduler::spawn("swapper", settings, |_| {
        Ok::<_, SwapError>(SwapRunner::new(|target, _, out| {
            out.copy_from_slice(target);
            Ok(())
        }))
    })
    .unwrap();
    let (live, metrics) = stand_in_stage(&c, detector, swapper);
    let photo_source = {
        let (real, _) = stage(&c);
        source(&real, &c)
    };
    live.faces().set("p1", photo_source).unwrap();
    let mut p = live.open(StreamId(10), "p1");
    let before = card(&c);
    // Frame 0 waits for the good detection; frame 1 starts a (failing) one in the background
    // and is swapped with the track; from frame 2 on there is no track and no good detection.
    // Those frames fail closed: the last swapped frame is held.
    let mut outcomes = Vec::new();
    let mut last_swapped = None;
    for _ in 0..4 {
        let mut f = before.clone();
        p.process(&mut f);
        outcomes.push(count(&metrics.swapped_frames));
        if outcomes.len() <= 2 {
            last_swapped = Some(f);
        } else {
            assert_eq!(Some(&f), last_swapped.as_ref(), "held");
        }
    }
    assert_eq!(outcomes, [1, 2, 2, 2]);
    assert_eq!(count(&metrics.swap_errors), 2);
    assert_eq!(count(&metrics.held_frames), 2);
}

/// A swapper file with a dynamic batch dimension (the stand-in `inswapper_128_batched.onnx`)
/// swaps several faces in one run, each exactly as the fixed file swaps it alone: at batch 1, 2
/// and 4 every item's output equals the fixed file's within 1e-4; through bound host buffers
/// the outputs are the plain run's.
#[test]
fn a_batched_swapper_gives_each_face_what_it_gets_alone() {
    use facerelay::swap::Swapper;
    let _g = lock();
    let c = config(|_| {});
    let rt = facerelay::infer::runtime(&c.models).unwrap();
    let dir = fixtures_dir();
    let contract = &facerelay::swap::swapper::INSWAPPER_128;
    let mut fixed =
        Swapper::load(rt, &c.models, &dir.join("inswapper_128.onnx"), contract).unwrap();
    let mut batched = Swapper::load(
        rt,
        &c.models,
        &dir.join("inswapper_128_batched.onnx"),
        contract,
    )
    .unwrap();
    assert!(!fixed.dynamic_batch() && batched.dynamic_batch());
    const CROP: usize = 3 * 128 * 128;
    // Four different faces: crops and latents that differ item by item.
    let crops: Vec<f32> = (0..4 * CROP)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    let latents: Vec<f32> = (0..4 * 512)
        .map(|i| ((i as f32) * 0.37).sin() / 8.0)
        .collect();
    let mut alone = vec![0.0; 4 * CROP];
    for k in 0..4 {
        fixed
            .swap(
                &crops[k * CROP..(k + 1) * CROP],
                &latents[k * 512..(k + 1) * 512],
                &mut alone[k * CROP..(k + 1) * CROP],
            )
            .unwrap();
    }
    let mut plain = Vec::new();
    for n in [1, 2, 4] {
        let mut out = vec![0.0; n * CROP];
        batched
            .swap_many(&crops[..n * CROP], &latents[..n * 512], &mut out)
            .unwrap();
        let worst = out
            .iter()
            .zip(&alone)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!("batch {n}: largest difference from batch 1 {worst:e}");
        assert!(worst <= 1e-4, "batch {n}: {worst}");
        plain.push(out);
    }
    // A batch that is not a whole number of faces is refused, not run.
    let mut out = vec![0.0; CROP];
    assert!(batched
        .swap_many(&crops[..CROP], &latents[..700], &mut out)
        .is_err());

    // Through bound host buffers (pinned on the GPU providers; the CPU allocator here, the same
    // code): the same output as the plain run, batch sizes coming back to buffers made before.
    batched
        .bind_host_memory(facerelay::infer::bound::HostMemory::Cpu)
        .unwrap();
    for (round, n) in [1, 2, 4, 2, 1, 4].into_iter().enumerate() {
        let mut out = vec![f32::NAN; n * CROP];
        batched
            .swap_many(&crops[..n * CROP], &latents[..n * 512], &mut out)
            .unwrap();
        let want = &plain[[1, 2, 4].iter().position(|&m| m == n).unwrap()];
        assert!(out == *want, "bound run {round} at batch {n} differs");
    }
    assert!(batched
        .swap_many(&crops[..CROP], &latents[..700], &mut out)
        .is_err());
    assert!(batched.is_bound(), "the bound runs did not fall back");
}

/// With a dynamic-batch swapper the live stage's scheduler puts several streams' faces into one
/// model run (counted by batch size), and each stream's frames come out as a stage that swaps
/// one face per run makes them.
#[test]
fn several_streams_share_swapper_runs_when_the_file_allows_it() {
    let _g = lock();
    const STREAMS: usize = 6;
    const FRAMES: usize = 8;
    let c = config(|s| {
        s.label = false;
        s.swapper_workers = 1;
        s.max_batch = 8;
        // Long enough for the streams' requests to meet in one batch on a loaded machine.
        s.max_wait_ms = 40;
        s.capacity = STREAMS;
    });
    let before = card(&c);
    // One stream on the fixed file: the frames every stream must get.
    let (fixed, _) = stage(&c);
    let s = source(&fixed, &c);
    fixed.faces().set("p0", s.clone()).unwrap();
    let mut p = fixed.open(StreamId(100), "p0");
    let expected: Vec<I420Frame> = (0..FRAMES)
        .map(|_| {
            let mut f = before.clone();
            p.process(&mut f);
            f
        })
        .collect();
    assert_eq!(
        fixed.deep().unwrap().swapper.stats().batch_sizes[0],
        FRAMES as u64
    );
    drop((p, fixed));

    let mut b = c.clone();
    b.models.swapper = "inswapper_128_batched.onnx".into();
    let (live, metrics) = stage(&b);
    let outputs = swap_in_streams(&live, &s, &before, STREAMS, FRAMES);
    let stats = live.deep().unwrap().swapper.stats();
    println!(
        "swapper runs by batch size (1..=8): {:?}",
        stats.batch_sizes
    );
    let faces: u64 = (1..).zip(&stats.batch_sizes).map(|(n, c)| n * c).sum();
    assert_eq!(
        faces,
        (STREAMS * FRAMES) as u64,
        "every frame's face ran once"
    );
    assert!(
        stats.batch_sizes[1..].iter().sum::<u64>() > 0,
        "some runs carried several streams' faces: {:?}",
        stats.batch_sizes
    );
    assert_eq!(count(&metrics.swapped_frames), (STREAMS * FRAMES) as u64);
    for (k, frames) in outputs.iter().enumerate() {
        for (i, (got, want)) in frames.iter().zip(&expected).enumerate() {
            let worst = got
                .y()
                .iter()
                .zip(want.y())
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            assert!(worst <= 1, "stream {k}, frame {i}: Y differs by {worst}");
        }
    }
}

/// Each of `streams` streams, on its own thread, swaps `frames` copies of `frame` with
/// `source`, all streams submitting each frame at the same moment; their outputs.
pub(crate) fn swap_in_streams(
    live: &LiveSwap,
    source: &Arc<SourceFace>,
    frame: &I420Frame,
    streams: usize,
    frames: usize,
) -> Vec<Vec<I420Frame>> {
    let barrier = Arc::new(std::sync::Barrier::new(streams));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..streams)
            .map(|k| {
                let owner = format!("p{k}");
                live.faces().set(&owner, source.clone()).unwrap();
                let mut p = live.open(StreamId(200 + k as u64), &owner);
                let barrier = barrier.clone();
                scope.spawn(move || {
                    (0..frames)
                        .map(|_| {
                            barrier.wait();
                            let mut f = frame.clone();
                            p.process(&mut f);
                            f
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}
