//! End to end through the relay: real WebRTC clients on loopback publish and receive.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use facerelay::config::Config;
use facerelay::media::synthetic::{numbered_frame, read_frame_number};
use facerelay::media::y_psnr;
use facerelay::signal::protocol::ServerMessage;
use facerelay::testkit::{Client, Publish, Received};

use crate::support::{join, serial, start, NOTHING, TIMEOUT, VIDEO};

const W: u32 = 640;
const H: u32 = 480;
const FRAME: Duration = Duration::from_millis(33);
/// Frame numbers at or above this are warm-up frames, not counted.
const WARM_UP: u16 = 60_000;

/// Per receiver: the Y-PSNR of each numbered frame it decoded (first copy only).
pub(crate) type Seen = BTreeMap<String, BTreeMap<u16, f64>>;

pub(crate) fn note(seen: &mut Seen, name: &str, got: Received) {
    if let Received::Video { frame, .. } = got {
        if let Some(n) = read_frame_number(&frame).filter(|n| *n < WARM_UP) {
            let psnr = y_psnr(&frame, &numbered_frame(W, H, n)).expect("same size");
            seen.entry(name.to_owned())
                .or_default()
                .entry(n)
                .or_insert(psnr);
        }
    }
}

/// Sends frames `range` from `a`, each once every receiver has decoded the one before (or has
/// been given up on), collecting what each receiver decodes. In lock step the server never
/// has a newer frame waiting, so it drops none by design, whatever this machine's speed: a
/// frame that does not arrive was lost. A receiver that misses three frames in a row is no
/// longer waited for (its frames are still collected), so a broken relay fails in seconds.
pub(crate) async fn stream(
    a: &mut Client,
    receivers: &mut [(&str, &mut Client)],
    range: std::ops::Range<u16>,
    seen: &mut Seen,
) {
    // Generous: a frame's decode, swap stage and encode on a loaded machine.
    const WAIT: Duration = Duration::from_secs(2);
    let mut misses = vec![0u32; receivers.len()];
    for n in range {
        a.send_video(&numbered_frame(W, H, n), n as u32 * 3000)
            .await
            .expect("send");
        for ((name, r), missed) in receivers.iter_mut().zip(&mut misses) {
            let has = |seen: &Seen| {
                seen.get(*name)
                    .is_some_and(|s| s.range(n..).next().is_some())
            };
            let deadline = Instant::now() + if *missed >= 3 { Duration::ZERO } else { WAIT };
            while !has(seen) {
                match r
                    .recv(deadline.saturating_duration_since(Instant::now()))
                    .await
                {
                    Some(got) => note(seen, name, got),
                    None => break,
                }
            }
            *missed = if has(seen) { 0 } else { *missed + 1 };
        }
    }
    // What is still in flight.
    for (name, r) in receivers.iter_mut() {
        while let Some(got) = r.recv(Duration::from_millis(300)).await {
            note(seen, name, got);
        }
    }
}

/// Sends warm-up frames until `receiver` decodes one: negotiation and the first IDR are done.
pub(crate) async fn warm_up(a: &mut Client, receiver: &mut Client) {
    let deadline = Instant::now() + TIMEOUT;
    let mut n = WARM_UP;
    loop {
        a.send_video(&numbered_frame(W, H, n), n as u32 * 3000)
            .await
            .expect("send");
        n += 1;
        if let Some(Received::Video { .. }) = receiver.recv(FRAME).await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no video reached the subscriber in time"
        );
    }
}

pub(crate) fn check_delivery(seen: &Seen, who: &str, expected: &[u16], min_share: f64) {
    let got = seen.get(who).cloned().unwrap_or_default();
    let delivered = expected.iter().filter(|n| got.contains_key(n)).count();
    let share = delivered as f64 / expected.len() as f64;
    let worst = got.values().cloned().fold(f64::INFINITY, f64::min);
    let mean = got.values().sum::<f64>() / got.len().max(1) as f64;
    println!(
        "{who}: {delivered}/{} frames, Y-PSNR mean {mean:.1} dB, worst {worst:.1} dB",
        expected.len()
    );
    assert!(
        share >= min_share,
        "{who} received {delivered} of {} frames",
        expected.len()
    );
    assert!(
        worst >= 30.0,
        "{who}: worst Y-PSNR {worst:.1} dB is below 30 dB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn video_reaches_subscribers_intact_and_late_joiners_see_it() {
    let _serial = serial().await;
    let server = start(Config::loopback()).await;
    let mut b = join(&server, "video", "B", NOTHING).await;
    let mut a = join(&server, "video", "A", VIDEO).await;
    a.wait_ready(TIMEOUT).await.expect("A connected");
    warm_up(&mut a, &mut b).await;

    let mut seen = Seen::new();
    stream(&mut a, &mut [("B", &mut b)], 0..150, &mut seen).await;
    let all: Vec<u16> = (0..150).collect();
    check_delivery(&seen, "B", &all, 0.9);
    if let Some(l) = server.app.engine.latency().summary(Some((W, H))) {
        println!(
            "server-added latency at {W}x{H}: median {:.2} ms, p95 {:.2} ms over {} frames",
            l.median_ms, l.p95_ms, l.count
        );
    }

    // The counters saw the same.
    let metrics = crate::support::http_get(&format!("http://{}/metrics", server.addr)).await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    assert_eq!(value("facerelay_participants "), 2.0);
    assert_eq!(value("facerelay_published_streams{kind=\"video\"} "), 1.0);
    assert!(value("facerelay_frames_out_total ") >= 150.0);
    assert!(value("facerelay_server_latency_seconds_count ") >= 150.0);
    // The server's two peer connections (and the clients', in this process) are alive; no
    // subscriber's queue overflowed.
    assert!(value("facerelay_peer_connections ") >= 2.0);
    assert_eq!(value("facerelay_egress_dropped_frames_total "), 0.0);
    assert_eq!(value("facerelay_joins_total{place=\"room\"} "), 2.0);
    assert_eq!(value("facerelay_peer_failures_total{stage=\"ice\"} "), 0.0);
    assert!(value("facerelay_uptime_seconds ") >= 1.0);
    let build = format!(
        "facerelay_build_info{{version=\"{}\"}} ",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&build), 1.0);

    // A third participant arrives while A is live and sees A as well.
    let mut c = join(&server, "video", "C", NOTHING).await;
    assert!(
        c.participants.iter().any(|p| p.name == "A"),
        "C is told who is there"
    );
    // Its subscription needs one renegotiation and an IDR: once its first frame arrives, it
    // gets A's frames as fully as B does.
    warm_up(&mut a, &mut c).await;
    let mut seen_late = Seen::new();
    stream(
        &mut a,
        &mut [("B", &mut b), ("C", &mut c)],
        150..240,
        &mut seen_late,
    )
    .await;
    let late: Vec<u16> = (150..240).collect();
    check_delivery(&seen_late, "B", &late, 0.9);
    check_delivery(&seen_late, "C", &late, 0.9);

    // B was told about C.
    let mut told = false;
    while let Some(msg) = b.next_message(Duration::from_millis(200)).await {
        told |= matches!(msg, ServerMessage::ParticipantJoined { participant } if participant.name == "C");
    }
    assert!(told, "B heard that C joined");

    a.close().await;
    b.close().await;
    c.close().await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opus_packets_are_forwarded_unchanged() {
    let _serial = serial().await;
    let server = start(Config::loopback()).await;
    let mut b = join(&server, "audio", "B", NOTHING).await;
    let audio = Publish {
        video: false,
        audio: true,
    };
    let mut a = join(&server, "audio", "A", audio).await;
    a.wait_ready(TIMEOUT).await.expect("A connected");
    let payload = |i: u32| Bytes::from(format!("opus-frame-{i:05}-").repeat(4));

    // Warm up until B's subscription carries packets.
    let deadline = Instant::now() + TIMEOUT;
    let mut i = 100_000;
    loop {
        a.send_audio(payload(i), i * 960).await.expect("send");
        i += 1;
        if let Some(Received::Audio { .. }) = b.recv(Duration::from_millis(20)).await {
            break;
        }
        assert!(Instant::now() < deadline, "no audio reached the subscriber");
    }
    while b.recv(Duration::from_millis(100)).await.is_some() {}

    let sent: Vec<Bytes> = (0..100).map(payload).collect();
    for (i, p) in sent.iter().enumerate() {
        a.send_audio(p.clone(), i as u32 * 960).await.expect("send");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut got = BTreeSet::new();
    while let Some(r) = b.recv(Duration::from_millis(500)).await {
        if let Received::Audio { owner, payload } = r {
            assert_eq!(owner, a.id, "audio is attributed to its publisher");
            got.insert(payload);
        }
    }
    let delivered = sent.iter().filter(|p| got.contains(*p)).count();
    println!("audio: {delivered}/100 packets arrived byte for byte");
    assert!(
        delivered >= 90,
        "only {delivered} of 100 Opus packets arrived unchanged"
    );
    a.close().await;
    b.close().await;
    server.shutdown().await.expect("clean shutdown");
}

/// Threads of this process whose name starts with `prefix` (codec threads are `codec-sN`).
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
                .filter(|name| name.starts_with(prefix))
                .count()
        })
        .unwrap_or(0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool, within: Duration) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn churn_frees_every_participant() {
    let _serial = serial().await;
    let server = start(Config::loopback()).await;
    let mut watcher = join(&server, "churn", "watcher", NOTHING).await;
    // Let the watcher's own sockets settle before taking the baseline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds_before = open_fds();
    let connections_before = facerelay::rtc::live_connections();
    for round in 0..12u16 {
        let mut p = join(&server, "churn", &format!("guest{round}"), VIDEO).await;
        p.wait_ready(TIMEOUT).await.expect("guest connected");
        for n in 0..10 {
            p.send_video(&numbered_frame(W, H, n), n as u32 * 3000)
                .await
                .expect("send");
        }
        wait_until(
            "the guest's stream has its codec thread",
            || threads_named("codec-") == 1,
            Duration::from_secs(5),
        )
        .await;
        if round % 2 == 0 {
            p.close().await;
        } else {
            p.vanish();
        }
        wait_until(
            "the guest is gone",
            || server.app.directory.stats().participants == 1,
            Duration::from_secs(5),
        )
        .await;
        wait_until(
            "its codec thread ends",
            || threads_named("codec-") == 0,
            Duration::from_secs(5),
        )
        .await;
    }
    // UDP sockets and timers of closed connections must be released.
    wait_until(
        "file descriptors return to the baseline",
        || open_fds() <= fds_before + 4,
        Duration::from_secs(10),
    )
    .await;
    // Every closed connection's memory is released: nothing keeps its handler alive.
    wait_until(
        "closed connections are freed",
        || facerelay::rtc::live_connections() <= connections_before,
        Duration::from_secs(10),
    )
    .await;
    let mut lefts = 0;
    while let Some(msg) = watcher.next_message(Duration::from_millis(200)).await {
        lefts += matches!(msg, ServerMessage::ParticipantLeft { .. }) as usize;
    }
    assert_eq!(lefts, 12, "the watcher saw every guest leave");
    watcher.close().await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_participant_whose_media_dies_is_removed_within_the_ice_timeout() {
    let _serial = serial().await;
    let mut config = Config::loopback();
    config.ice.disconnect_timeout_secs = 2;
    let server = start(config).await;
    let mut b = join(&server, "ice", "B", NOTHING).await;
    let mut a = join(&server, "ice", "A", VIDEO).await;
    a.wait_ready(TIMEOUT).await.expect("A connected");
    for n in 0..5 {
        a.send_video(&numbered_frame(W, H, n), n as u32 * 3000)
            .await
            .expect("send");
    }
    let since = Instant::now();
    a.drop_media().await;
    wait_until(
        "A is removed",
        || server.app.directory.stats().participants == 1,
        Duration::from_secs(6),
    )
    .await;
    println!("removed {:?} after its media stopped", since.elapsed());
    // A's socket is still open and is told why.
    let mut told = false;
    while let Some(msg) = a.next_message(Duration::from_millis(500)).await {
        told |= matches!(&msg, ServerMessage::Error { code, .. } if code == "connection_lost");
    }
    assert!(
        told,
        "the vanished participant is told it lost its connection"
    );
    let mut left = false;
    while let Some(msg) = b.next_message(Duration::from_millis(500)).await {
        left |= matches!(msg, ServerMessage::ParticipantLeft { .. });
    }
    assert!(left, "the others are told");
    wait_until(
        "codec threads end",
        || threads_named("codec-") == 0,
        Duration::from_secs(5),
    )
    .await;
    a.close().await;
    b.close().await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscribers_pli_makes_the_encoder_send_an_idr() {
    let _serial = serial().await;
    let mut config = Config::loopback();
    // No periodic IDRs: any IDR below was asked for.
    config.media.keyframe_interval = 0;
    // No self-view: A's own subscription would ask for an IDR too, whenever its renegotiation
    // completes (possibly inside the steady window). B's activation is then the only request
    // before the window, and warm-up ends with the IDR it produced.
    config.media.self_view = false;
    let server = start(config).await;
    let mut b = join(&server, "pli", "B", NOTHING).await;
    let mut a = join(&server, "pli", "A", VIDEO).await;
    a.wait_ready(TIMEOUT).await.expect("A connected");
    warm_up(&mut a, &mut b).await;

    // Sends `frames`, then waits until nothing has arrived for a while (frames still on their
    // way belong to this window, not the next); returns the numbers of the keyframes B received.
    async fn keyframes_in(
        a: &mut Client,
        b: &mut Client,
        frames: std::ops::Range<u16>,
    ) -> Vec<u16> {
        let mut keyframes = Vec::new();
        let mut count = |got: Received| {
            if let Received::Video {
                keyframe: true,
                frame,
                ..
            } = got
            {
                keyframes.push(read_frame_number(&frame).unwrap_or(u16::MAX));
            }
        };
        for k in frames {
            a.send_video(&numbered_frame(W, H, k), k as u32 * 3000)
                .await
                .expect("send");
            while let Some(got) = b.recv(FRAME).await {
                count(got);
            }
        }
        while let Some(got) = b.recv(FRAME * 10).await {
            count(got);
        }
        keyframes
    }
    // Every reason the server has to make an IDR once B is watching: a subscriber's PLI (counted
    // as it arrives), or a frame a subscriber missed (encoded frames egress could not take, or a
    // subscriber's full queue), which under a loaded machine may happen.
    let metrics = server.app.engine.metrics().clone();
    let pipeline = server.app.engine.pipeline_metrics().clone();
    let reasons = || {
        (
            metrics.keyframe_requests.get(),
            pipeline.output_dropped.get() + metrics.egress_dropped.get(),
        )
    };
    // B's start settles first (its activation asked for an IDR). The steady window then starts
    // with a cut (the picture jumps from frame 61029 to frame 0): no reason for a keyframe.
    keyframes_in(&mut a, &mut b, WARM_UP + 1000..WARM_UP + 1030).await;
    // Steady state: P-frames only.
    let (asked, missed) = reasons();
    let steady = keyframes_in(&mut a, &mut b, 0..30).await;
    let (asked, missed) = (reasons().0 - asked, reasons().1 - missed);
    assert!(
        steady.is_empty() || asked + missed > 0,
        "no IDR without a reason: IDRs of frames {steady:?}, {asked} PLIs, {missed} frames \
         missed, {} frames replaced by a newer one before their encode since the start",
        pipeline.frames_dropped.get()
    );
    // B asks; as a browser does, it asks again when the keyframe does not come (a packet of it
    // lost on the way), at most three times.
    let (asked, _) = reasons();
    let mut after = 0;
    for round in 0..3u16 {
        b.request_keyframes().await;
        after = keyframes_in(&mut a, &mut b, 30 + 30 * round..60 + 30 * round)
            .await
            .len();
        if after > 0 {
            break;
        }
    }
    let asked = reasons().0 - asked;
    assert!(asked >= 1, "the server never received B's PLI");
    assert!(
        after >= 1,
        "{asked} PLIs received, no IDR came back ({} frames missed in all)",
        reasons().1
    );
    a.close().await;
    b.close().await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_video_over_the_pixel_limit_is_refused_once_and_the_publisher_is_told() {
    use facerelay::signal::protocol::ServerMessage;
    let _serial = crate::support::serial().await;
    let mut config = Config::loopback();
    config.media.max_frame_pixels = 320 * 240;
    let server = crate::support::start(config).await;
    let mut a = crate::support::join(&server, "big", "A", crate::support::VIDEO).await;
    a.wait_ready(crate::support::TIMEOUT)
        .await
        .expect("A connected");
    let frame = facerelay::media::I420Frame::filled(640, 480, 120, 128, 128).unwrap();
    let metrics = server.app.engine.metrics().clone();
    let plis = || metrics.plis_sent.get();
    let mut told = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    let mut k = 0u32;
    let mut plis_after_told = None;
    while std::time::Instant::now() < deadline {
        a.send_video(&frame, k * 3000).await.expect("send");
        k += 1;
        while let Some(msg) = a.next_message(Duration::from_millis(30)).await {
            if let ServerMessage::Error { code, message } = msg {
                told.push((code, message));
                plis_after_told.get_or_insert(plis());
            }
        }
    }
    println!(
        "told {told:?}; PLIs: {} when told, {} at the end",
        plis_after_told.unwrap_or(0),
        plis()
    );
    assert_eq!(told.len(), 1, "told once: {told:?}");
    assert_eq!(told[0].0, "video_too_large");
    assert!(
        told[0].1.contains("640x480") && told[0].1.contains("76800"),
        "{}",
        told[0].1
    );
    // No endless keyframe requests for a picture that will be as large again.
    let when_told = plis_after_told.unwrap();
    assert!(
        plis() <= when_told + 1,
        "PLIs kept coming: {when_told} -> {}",
        plis()
    );
    a.close().await;
    server.shutdown().await.unwrap();
}

/// `facerelay bench churn` in brief: 20 cycles of 8 participants that offer and drop their
/// sockets and one that publishes video; at every sample no session, peer connection or participant is left over
/// (process-wide figures, which other tests running beside this one would disturb, come from
/// the full program: docs/PERFORMANCE.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_churn_leaves_nothing_behind() {
    let _serial = serial().await;
    let r = facerelay::cli::bench::measure_churn(&facerelay::cli::bench::ChurnBenchArgs {
        cycles: 20,
        signalling: 8,
        media: 1,
        // They offer and drop their sockets: the server's peer connections must go too.
        offer: true,
        warmup: 10,
        every: 10,
    })
    .await
    .expect("the churn runs");
    println!("{}", serde_json::to_string(&r).unwrap());
    assert_eq!(r.samples.len(), 2);
    for s in &r.samples {
        assert_eq!(
            (
                s.resources.sessions,
                s.resources.peer_connections,
                s.resources.participants
            ),
            (0, 0, 0),
            "cycle {}",
            s.cycle
        );
    }
}

/// A preview (`{"type":"preview"}`): the client sees its own video back through the server
/// (even with `media.self_view` off), alone: nobody in a room sees or hears of it, it is no
/// room in the figures but holds a seat, and leaving frees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_preview_sees_itself_through_the_server_and_nobody_else_sees_it() {
    use facerelay::signal::protocol::ClientMessage;
    let _serial = serial().await;
    let mut config = Config::loopback();
    config.media.self_view = false;
    let server = start(config).await;
    let mut b = join(&server, "lab", "B", VIDEO).await;
    b.wait_ready(TIMEOUT).await.expect("B connected");
    let settings = facerelay::rtc::RtcSettings::from_config(&Config::loopback());
    let preview = ClientMessage::Preview { token: None };
    let mut a = Client::enter(
        &server.ws_url(),
        &preview,
        VIDEO,
        &settings,
        crate::support::encoder(),
    )
    .await
    .expect("the preview starts");
    assert!(a.participants.is_empty(), "a preview is alone");
    a.wait_ready(TIMEOUT).await.expect("A connected");

    // A's numbered frames come back to A; B's stream does not reach A, nor A's B.
    let mut seen = Seen::new();
    let start = Instant::now();
    for n in 0..120u16 {
        a.send_video(&numbered_frame(W, H, n), n as u32 * 3000)
            .await
            .expect("send");
        b.send_video(&numbered_frame(W, H, 1000 + n), n as u32 * 3000)
            .await
            .expect("send");
        let due = start + FRAME * (n as u32 + 1);
        while let Some(got) = a.recv(due.saturating_duration_since(Instant::now())).await {
            note(&mut seen, "A", got);
        }
        while let Some(got) = b.recv(Duration::ZERO).await {
            note(&mut seen, "B", got);
        }
    }
    while let Some(got) = a.recv(Duration::from_millis(300)).await {
        note(&mut seen, "A", got);
    }
    let own = seen.get("A").cloned().unwrap_or_default();
    assert!(
        own.keys().all(|n| *n < 120),
        "A saw only its own frames: {:?}",
        own.keys().collect::<Vec<_>>()
    );
    let late: Vec<u16> = (30..120).collect();
    check_delivery(&seen, "A", &late, 0.9);
    assert!(!seen.contains_key("B"), "B never sees the preview");
    while let Some(msg) = b.next_message(Duration::from_millis(100)).await {
        assert!(
            !matches!(msg, ServerMessage::ParticipantJoined { .. }),
            "B hears nothing of the preview: {msg:?}"
        );
    }

    let metrics = crate::support::http_get(&format!("{}metrics", server.url())).await;
    let figure = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in /metrics"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(figure("facerelay_rooms "), "1", "the preview is no room");
    assert_eq!(figure("facerelay_participants "), "2", "it holds a seat");
    assert_eq!(figure("facerelay_joins_total{place=\"preview\"}"), "1");
    a.close().await;
    let deadline = Instant::now() + TIMEOUT;
    while server.app.directory.stats().participants != 1 {
        assert!(Instant::now() < deadline, "the preview's seat is freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.close().await;
    server.shutdown().await.expect("clean shutdown");
}
