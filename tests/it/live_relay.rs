//! The live swap end to end: a WebRTC client picks a face over HTTP and publishes video with a
//! face in it; the subscriber receives that face swapped (as the stand-in swapper defines) and
//! the rest of the frame as sent, and is told the stream is swapped.

use std::time::{Duration, Instant};

use facerelay::app::{RunningServer, Swap};
use facerelay::config::Config;
use facerelay::media::{y_psnr, I420Frame};
use facerelay::signal::protocol::ServerMessage;
use facerelay::swap::{color, fixtures_dir, Engine, Selection};
use facerelay::testkit::Received;

use crate::support::{join, serial, NOTHING, TIMEOUT, VIDEO};
use facerelay::room::FaceState;
use facerelay::testkit::Client;

/// The face states B was told for participant `id`, in order (messages drained).
async fn faces_seen(b: &mut Client, id: &str) -> Vec<FaceState> {
    let mut seen = Vec::new();
    while let Some(msg) = b.next_message(Duration::from_millis(400)).await {
        if let ServerMessage::ParticipantUpdated { participant } = msg {
            if participant.id == id {
                assert_eq!(
                    participant.swapped,
                    matches!(participant.face, FaceState::Swapped | FaceState::Held)
                );
                seen.push(participant.face);
            }
        }
    }
    seen
}

/// The `face-state` messages a wearer was told, in order (messages drained).
async fn own_face_states(a: &mut Client) -> Vec<(FaceState, Option<String>)> {
    let mut seen = Vec::new();
    while let Some(msg) = a.next_message(Duration::from_millis(400)).await {
        if let ServerMessage::FaceState { state, reason } = msg {
            seen.push((state, reason));
        }
    }
    seen
}

/// Y-PSNR over the pixels inside (`inside` = true) or outside a box.
fn psnr_region(a: &I420Frame, b: &I420Frame, bx: [u32; 4], inside: bool) -> f64 {
    let w = a.width() as usize;
    let (mut sse, mut n) = (0f64, 0usize);
    for (i, (&x, &y)) in a.y().iter().zip(b.y()).enumerate() {
        let (col, row) = ((i % w) as u32, (i / w) as u32);
        let in_box = col >= bx[0] && col < bx[2] && row >= bx[1] && row < bx[3];
        if in_box == inside {
            let d = x as f64 - y as f64;
            sse += d * d;
            n += 1;
        }
    }
    if sse == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0f64 * 255.0 / (sse / n as f64)).log10()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chosen_face_is_swapped_live_and_the_subscriber_is_told() {
    let _serial = serial().await;
    let mut config = Config::loopback();
    config.models = config.models.with_fixtures();
    // The disclosure label has its own tests; here it would sit in "the rest of the frame".
    config.swap.label = false;
    config.swap.detect_every = 1;

    // What the stand-in swapper makes of the test card, computed offline.
    let target = image::open(fixtures_dir().join("testcard_target.png"))
        .unwrap()
        .to_rgb8();
    let original = color::rgb_to_i420(&target).unwrap();
    let photo = std::fs::read(fixtures_dir().join("testcard_source.jpg")).unwrap();
    let mut engine = Engine::load(&config.models, &config.swap).expect("fixture models");
    let source = engine
        .source_face(&image::load_from_memory(&photo).unwrap().to_rgb8())
        .unwrap();
    let mut expected = original.clone();
    let report = engine
        .swap_frame(&mut expected, &source, &Selection::Largest)
        .unwrap();
    let face_box = report.swapped[0].paste_box;
    drop(engine);

    let swap = Swap::from_config(&config).expect("the live swap starts");
    let server = RunningServer::start_with_swap(config, swap).await.unwrap();
    let mut b = join(&server, "live", "B", NOTHING).await;
    let mut a = join(&server, "live", "A", VIDEO).await;
    a.wait_ready(TIMEOUT).await.expect("A connected");
    let (w, h) = (original.width(), original.height());

    // Sends the test card until B has `n` frames (after the first few), returns them.
    async fn exchange(
        a: &mut facerelay::testkit::Client,
        b: &mut facerelay::testkit::Client,
        frame: &I420Frame,
        n: usize,
    ) -> Vec<(I420Frame, Option<Vec<u8>>)> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut k = 0u32;
        while got.len() < n + 10 && Instant::now() < deadline {
            a.send_video(frame, k * 3000).await.expect("send");
            k += 1;
            while let Some(r) = b.recv(Duration::from_millis(33)).await {
                if let Received::Video { frame, mark, .. } = r {
                    got.push((frame, mark));
                }
            }
        }
        got.split_off(got.len().min(10)) // the first frames may predate a change
    }

    // No face chosen: the stream passes through unchanged (but for coding).
    let plain = exchange(&mut a, &mut b, &original, 20).await;
    assert!(plain.len() >= 20, "B received {} frames", plain.len());
    for (f, mark) in &plain {
        assert_eq!((f.width(), f.height()), (w, h));
        assert!(y_psnr(f, &original).unwrap() >= 30.0);
        assert_eq!(mark, &None, "an unswapped stream carries no facerelay SEI");
    }
    let plain_face = psnr_region(&plain[plain.len() - 1].0, &original, face_box, true);
    println!("no face chosen: face box {plain_face:.1} dB against the original");

    // A picks a face over HTTP with its session token.
    let (status, body) =
        crate::support::request(&server, "POST", "/api/face?consent=true", &a.token, photo).await;
    assert_eq!(status, 200, "{body}");

    let swapped = exchange(&mut a, &mut b, &original, 20).await;
    // B is told what A's video carries: held back (blurred) until the first swapped frames,
    // then swapped; A is told the same about itself.
    // (A loaded machine may pause the swap again afterwards: held, blurred, then swapped once
    // more; which state comes last depends on the machine, that swapped came does not.)
    let seen = faces_seen(&mut b, &a.id).await;
    assert_eq!(seen.first(), Some(&FaceState::Blurred), "{seen:?}");
    assert!(seen.contains(&FaceState::Swapped), "{seen:?}");
    let own = own_face_states(&mut a).await;
    assert!(own.iter().any(|s| s.0 == FaceState::Swapped), "{own:?}");
    assert!(swapped.len() >= 20, "B received {} frames", swapped.len());
    for (f, mark) in &swapped {
        // Every swapped frame is marked in the bitstream.
        let mark =
            String::from_utf8(mark.clone().expect("the facerelay SEI on a swapped frame")).unwrap();
        let mark: serde_json::Value = serde_json::from_str(&mark).unwrap();
        assert_eq!(mark["swapped"], true);
        assert_eq!(mark["server"], facerelay::media::sei::server_id());
        let rest = psnr_region(f, &original, face_box, false);
        let face_vs_expected = psnr_region(f, &expected, face_box, true);
        let face_vs_original = psnr_region(f, &original, face_box, true);
        assert!(rest >= 30.0, "the rest of the frame: {rest:.1} dB");
        assert!(
            face_vs_expected >= 28.0 && face_vs_expected > face_vs_original + 6.0,
            "the face box matches the stand-in swap ({face_vs_expected:.1} dB) rather than the original ({face_vs_original:.1} dB)"
        );
    }
    let last = &swapped[swapped.len() - 1].0;
    println!(
        "face chosen: rest {:.1} dB against the original; face box {:.1} dB against the offline swap, {:.1} dB against the original",
        psnr_region(last, &original, face_box, false),
        psnr_region(last, &expected, face_box, true),
        psnr_region(last, &original, face_box, true)
    );
    a.close().await;
    b.close().await;
    server.shutdown().await.unwrap();
}

/// What the stand-in models do in [`failing_streams_never_reach_the_subscriber_with_the_face`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum Failure {
    /// The detector finds no face.
    NoFace,
    /// The swapper errs.
    SwapperErrs,
    /// The swapper takes longer than `swap.timeout_ms`.
    SwapperTimesOut,
    /// The swapper works for the first frames, then errs.
    SwapperStops,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_streams_never_reach_the_subscriber_with_the_face() {
    use facerelay::infer::scheduler::Scheduler;
    use facerelay::swap::live::{DetectRunner, LiveModels, LiveSwap, OnFailure, SwapRunner};
    use facerelay::swap::{Embedding, Identity, SourceFace, SwapError};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let _serial = serial().await;
    let target = image::open(fixtures_dir().join("testcard_target.png"))
        .unwrap()
        .to_rgb8();
    let original = color::rgb_to_i420(&target).unwrap();
    let mut config = Config::loopback();
    config.models = config.models.with_fixtures();
    config.swap.label = false;
    config.swap.detect_every = 1;
    config.swap.timeout_ms = 150;
    let mut engine = Engine::load(&config.models, &config.swap).expect("fixture models");
    let face = engine.detect(&original).unwrap()[0];
    let photo = image::open(fixtures_dir().join("testcard_source.jpg"))
        .unwrap()
        .to_rgb8();
    let source = Arc::new(engine.source_face(&photo).unwrap());
    let mut expected = original.clone();
    let report = engine
        .swap_frame(&mut expected, &source, &Selection::Largest)
        .unwrap();
    let face_box = report.swapped[0].paste_box;
    drop(engine);
    let identity = Identity {
        embedding: Embedding::from_raw(&[1.0; 512]).unwrap(),
        latent: source.latent().unwrap().to_vec(),
    };
    let source = Arc::new(SourceFace {
        identity: Some(identity),
        ..(*source).clone()
    });

    for policy in [OnFailure::Hold, OnFailure::Blur] {
        for failure in [
            Failure::NoFace,
            Failure::SwapperErrs,
            Failure::SwapperTimesOut,
            Failure::SwapperStops,
        ] {
            let mut c = config.clone();
            c.swap.on_failure = policy;
            c.swap.hold_ms = 60_000; // the whole test: held frames stay held
            let settings = c.swap.scheduler_settings(1);
            let detector = Scheduler::spawn("detector", settings, move |_| {
                Ok::<_, SwapError>(DetectRunner::new(move |_| {
                    Ok(if failure == Failure::NoFace {
                        vec![]
                    } else {
                        vec![face]
                    })
                }))
            })
            .unwrap();
            // The stand-in swapper: what the real stand-in model does (a tint), via the
            // expected frame's crop is not needed here; an inverted crop is as visible.
            let calls = Arc::new(AtomicU64::new(0));
            let swapper = Scheduler::spawn("swapper", settings, move |_| {
                let calls = calls.clone();
                Ok::<_, SwapError>(SwapRunner::new(move |target, _, out| {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    match failure {
                        Failure::SwapperTimesOut => std::thread::sleep(Duration::from_millis(400)),
                        Failure::SwapperStops if n < 15 => {
                            for (o, t) in out.iter_mut().zip(target) {
                                *o = 1.0 - t;
                            }
                            return Ok(());
                        }
                        _ => {}
                    }
                    Err(SwapError::ModelOutput("stand-in swapper failure".into()))
                }))
            })
            .unwrap();
            let models = LiveModels {
                contract: &facerelay::swap::swapper::INSWAPPER_128,
                detector: Arc::new(detector),
                swapper: Arc::new(swapper),
                recognizer: None,
                mesh: None,
            };
            let live = Arc::new(LiveSwap::with_models(models, &c.swap));
            let metrics = live.metrics().clone();
            let swap = Swap {
                stage: live.clone(),
                faces: live.clone(),
                swapper: "inswapper_128",
                live: Some(live.clone()),
                ..Swap::none()
            };
            let server = RunningServer::start_with_swap(c, swap).await.unwrap();
            let mut b = join(&server, "fail", "B", NOTHING).await;
            let mut a = join(&server, "fail", "A", VIDEO).await;
            a.wait_ready(TIMEOUT).await.expect("A connected");
            live.faces().set(&a.id, source.clone()).unwrap();
            let (mut got, mut marks) = (Vec::new(), Vec::new());
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut k = 0u32;
            while got.len() < 40 && Instant::now() < deadline {
                a.send_video(&original, k * 3000).await.expect("send");
                k += 1;
                while let Some(r) = b.recv(Duration::from_millis(33)).await {
                    if let Received::Video { frame, mark, .. } = r {
                        got.push(frame);
                        marks.push(mark.is_some());
                    }
                }
            }
            assert!(
                got.len() >= 20,
                "{failure:?}, {policy:?}: B received {} frames",
                got.len()
            );
            // Only frames with a swapped face (swapped, or a swapped frame held) are marked:
            // never a blurred one.
            let marked = marks.iter().filter(|m| **m).count() as u64;
            let m0 = |c: &facerelay::metrics::Counter| c.get();
            assert!(
                marked <= m0(&metrics.swapped_frames) + m0(&metrics.held_frames),
                "{failure:?}, {policy:?}"
            );
            if failure != Failure::SwapperStops {
                assert_eq!(
                    marked, 0,
                    "{failure:?}, {policy:?}: nothing swapped, nothing marked"
                );
            }
            let closest = got
                .iter()
                .map(|f| psnr_region(f, &original, face_box, true))
                .fold(f64::MIN, f64::max);
            let m = |c: &facerelay::metrics::Counter| c.get();
            println!(
                "{failure:?}, {policy:?}: {} frames received; the face box closest to the original face: {closest:.1} dB; swapped {}, held {}, blurred {}",
                got.len(),
                m(&metrics.swapped_frames),
                m(&metrics.held_frames),
                m(&metrics.blurred_frames)
            );
            // The original face through the relay measures above 30 dB (the test above).
            assert!(
                closest < 20.0,
                "{failure:?}, {policy:?}: a frame shows the original face ({closest:.1} dB)"
            );
            // What B is told about A's video, and what A is told about itself, follow the
            // frames (debounced).
            let seen = faces_seen(&mut b, &a.id).await;
            let own = own_face_states(&mut a).await;
            println!("  B was told {seen:?}; A was told {own:?}");
            let last = match (failure, policy) {
                (Failure::SwapperStops, OnFailure::Hold) => FaceState::Held,
                _ => FaceState::Blurred,
            };
            assert_eq!(seen.last(), Some(&last), "{failure:?}, {policy:?}");
            let reason = if failure == Failure::NoFace {
                "no_face"
            } else {
                "busy"
            };
            assert_eq!(
                own.last(),
                Some(&(last, Some(reason.to_owned()))),
                "{failure:?}, {policy:?}"
            );
            if failure == Failure::SwapperStops {
                assert_eq!(seen.first(), Some(&FaceState::Swapped), "{policy:?}");
                assert!(m(&metrics.swapped_frames) > 0);
                let closed = match policy {
                    OnFailure::Hold => m(&metrics.held_frames),
                    _ => m(&metrics.blurred_frames),
                };
                assert!(closed > 0, "{policy:?}: frames after the swapper stopped");
            } else {
                assert_eq!(m(&metrics.swapped_frames), 0);
                assert!(
                    m(&metrics.blurred_frames) > 0,
                    "nothing swapped yet: hold falls back to blur"
                );
            }
            a.close().await;
            b.close().await;
            server.shutdown().await.unwrap();
        }
    }
}
