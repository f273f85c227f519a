//! Benchmark programs (`facerelay bench …`): they print figures, a table and JSON, and never
//! fail because the machine is slow. This file: `relay`, `churn` and `soak`; the others are
//! beside it.

pub mod live;
pub mod mesh;
pub mod swap;
pub mod voice;
pub mod watermark;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::app::RunningServer;
use crate::config::Config;
use crate::media::synthetic::{numbered_frame, read_frame_number};
use crate::media::{EncoderSettings, IdentityStage};
use crate::rtc::{LatencySummary, RtcSettings};
use crate::testkit::{Client, Publish, Received};

const VIDEO_ONLY: Publish = Publish {
    video: true,
    audio: false,
};
const NOTHING: Publish = Publish {
    video: false,
    audio: false,
};

#[derive(Debug, Clone, clap::Args)]
pub struct RelayBenchArgs {
    /// Resolutions to measure, e.g. 640x480,1280x720.
    #[arg(long, default_value = "640x480,1280x720", value_delimiter = ',')]
    pub resolution: Vec<String>,
    /// Seconds of video per resolution.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Frame rate the publisher sends at.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
}

#[derive(Debug, serde::Serialize)]
struct RelayResult {
    resolution: String,
    frames_sent: u32,
    frames_received: usize,
    server_latency: Option<LatencySummary>,
}

pub fn parse_resolution(s: &str) -> anyhow::Result<(u32, u32)> {
    let (w, h) = s
        .split_once('x')
        .context("resolution must look like 640x480")?;
    let (w, h): (u32, u32) = (w.trim().parse()?, h.trim().parse()?);
    if w < 576 || h < 64 || w % 2 != 0 || h % 2 != 0 {
        bail!("resolution {s}: width >= 576, height >= 64, both even");
    }
    Ok((w, h))
}

/// Two clients on loopback: A publishes numbered synthetic frames in real time, B subscribes.
/// Prints the server-added latency (last RTP packet of a frame in → first RTP packet of its
/// re-encoded frame out) for each resolution.
pub async fn relay(args: RelayBenchArgs) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for res in &args.resolution {
        let (w, h) = parse_resolution(res)?;
        results.push(relay_one(w, h, args.seconds, args.fps).await?);
    }
    println!(
        "server-added latency, identity frame stage (decode + encode), {} fps",
        args.fps
    );
    println!(
        "{:<10} {:>7} {:>9} {:>10} {:>8} {:>8}",
        "resolution", "sent", "received", "median ms", "p95 ms", "p99 ms"
    );
    for r in &results {
        let l = r.server_latency;
        let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
        println!(
            "{:<10} {:>7} {:>9} {:>10} {:>8} {:>8}",
            r.resolution,
            r.frames_sent,
            r.frames_received,
            f(l.map(|l| l.median_ms)),
            f(l.map(|l| l.p95_ms)),
            f(l.map(|l| l.p99_ms))
        );
    }
    println!(
        "{}",
        serde_json::to_string(
            &serde_json::json!({ "bench": "relay", "fps": args.fps, "results": results })
        )?
    );
    Ok(())
}

async fn relay_one(width: u32, height: u32, seconds: u64, fps: u32) -> anyhow::Result<RelayResult> {
    let mut config = Config::loopback();
    // Only the relay path is measured: no self-view copy for the publisher to decode.
    config.media.self_view = false;
    let settings = RtcSettings::from_config(&config);
    let encoder = EncoderSettings {
        bitrate_bps: if width * height > 640 * 480 {
            3_000_000
        } else {
            1_500_000
        },
        max_frame_rate: fps as f32,
        keyframe_interval: 0,
    };
    let server = RunningServer::start(config, Arc::new(IdentityStage)).await?;
    let url = server.ws_url();
    let mut b = Client::join(&url, "bench", "B", NOTHING, &settings, encoder).await?;
    let mut a = Client::join(&url, "bench", "A", VIDEO_ONLY, &settings, encoder).await?;
    a.wait_ready(Duration::from_secs(10)).await?;
    let frame_interval = Duration::from_secs_f64(1.0 / fps as f64);
    let ticks = 90_000 / fps;
    // Warm up until B decodes something, then measure from a clean slate.
    let mut n: u16 = 0;
    let warm_deadline = Instant::now() + Duration::from_secs(10);
    loop {
        a.send_video(&numbered_frame(width, height, n), n as u32 * ticks)
            .await?;
        n += 1;
        if let Some(Received::Video { .. }) = b.recv(frame_interval).await {
            break;
        }
        if Instant::now() > warm_deadline {
            bail!("no video reached the subscriber within 10 s");
        }
    }
    server.app.engine.latency().clear();
    let total = seconds as u32 * fps;
    let start = Instant::now();
    // Frames of the measured run, by number (warm-up frames still in flight do not count).
    let first = n;
    let measured = |got: Option<Received>| match got {
        Some(Received::Video { frame, .. }) => {
            read_frame_number(&frame).is_some_and(|k| k.wrapping_sub(first) < total as u16)
        }
        _ => false,
    };
    let mut received = 0;
    for i in 0..total {
        let due = start + frame_interval * i;
        // Drain what arrived while waiting for the next frame's time.
        while let Some(now) = Some(Instant::now()).filter(|now| *now < due) {
            received += measured(b.recv(due - now).await) as usize;
        }
        a.send_video(&numbered_frame(width, height, n), n as u32 * ticks)
            .await?;
        n = n.wrapping_add(1);
    }
    while let Some(got) = b.recv(Duration::from_millis(500)).await {
        received += measured(Some(got)) as usize;
    }
    let summary = server.app.engine.latency().summary(Some((width, height)));
    a.close().await;
    b.close().await;
    server.shutdown().await?;
    Ok(RelayResult {
        resolution: format!("{width}x{height}"),
        frames_sent: total,
        frames_received: received,
        server_latency: summary,
    })
}

#[derive(Debug, Clone, clap::Args)]
pub struct ChurnBenchArgs {
    /// Join/leave cycles.
    #[arg(long, default_value_t = 1000)]
    pub cycles: usize,
    /// Participants per cycle that only signal: open a socket, join a room, leave.
    #[arg(long, default_value_t = 8)]
    pub signalling: usize,
    /// Participants per cycle that also connect WebRTC and publish a few video frames before
    /// leaving (every other one vanishes without saying goodbye).
    #[arg(long, default_value_t = 1)]
    pub media: usize,
    /// The signalling-only participants also send an offer (the server builds a peer
    /// connection and answers) and then drop their socket without leaving, as closed tabs.
    #[arg(long)]
    pub offer: bool,
    /// Cycles before the baseline sample (allocator and caches warm up).
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// A sample every this many cycles.
    #[arg(long, default_value_t = 100)]
    pub every: usize,
}

/// The process's resources at one moment.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ResourceSample {
    pub rss_kib: u64,
    pub fds: usize,
    pub threads: usize,
    /// Signalling sessions and peer connections still alive, and participants in rooms.
    pub sessions: usize,
    pub peer_connections: usize,
    pub participants: usize,
}

impl ResourceSample {
    /// Now, in this process, with the live-object gauges of `server`.
    pub fn take(server: &RunningServer) -> Self {
        let (rss_kib, fds, threads) = process_resources();
        ResourceSample {
            rss_kib,
            fds,
            threads,
            sessions: server.app.live_sessions(),
            peer_connections: crate::rtc::live_connections(),
            participants: server.app.directory.stats().participants,
        }
    }
}

/// Growth of resources over samples taken after warm-up.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Growth {
    /// Mean RSS of the later half of the samples against the earlier half's. RSS moves up and
    /// down as the allocator reuses memory: two halves' means say more than two samples.
    pub rss_growth_percent: f64,
    /// From the first sample to the last one.
    pub fds_growth: i64,
    pub threads_growth: i64,
}

impl Growth {
    /// Over `samples` (those taken from the end of warm-up on).
    pub fn after<'a>(samples: impl Iterator<Item = &'a ResourceSample>) -> anyhow::Result<Self> {
        let samples: Vec<&ResourceSample> = samples.collect();
        let (first, last) = match (samples.first(), samples.last()) {
            (Some(first), Some(last)) => (first, last),
            _ => bail!("no sample after warm-up"),
        };
        let mean = |v: &[&ResourceSample]| {
            v.iter().map(|s| s.rss_kib as f64).sum::<f64>() / v.len().max(1) as f64
        };
        let (earlier, later) = samples.split_at(samples.len() / 2);
        let rss = if earlier.is_empty() {
            0.0
        } else {
            mean(later) / mean(earlier) - 1.0
        };
        Ok(Growth {
            rss_growth_percent: (rss * 1000.0).round() / 10.0,
            fds_growth: last.fds as i64 - first.fds as i64,
            threads_growth: last.threads as i64 - first.threads as i64,
        })
    }
}

/// A loopback server for `participants` at once from this one address, in one room if need
/// be, without self-view.
fn bench_config(participants: usize) -> Config {
    let mut config = Config::loopback();
    config.media.self_view = false;
    let rooms = &mut config.rooms;
    rooms.max_total_participants = rooms.max_total_participants.max(participants);
    rooms.max_participants = rooms.max_participants.max(participants);
    config.server.max_sessions_per_ip = config.server.max_sessions_per_ip.max(participants);
    config
}

/// Resident memory, file descriptors and threads of this process (Linux `/proc`).
pub fn process_resources() -> (u64, usize, usize) {
    let rss_kib = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4);
    let count = |dir: &str| std::fs::read_dir(dir).map_or(0, |d| d.count());
    (rss_kib, count("/proc/self/fd"), count("/proc/self/task"))
}

#[derive(Debug, serde::Serialize)]
pub struct ChurnSample {
    pub cycle: usize,
    #[serde(flatten)]
    pub resources: ResourceSample,
}

#[derive(Debug, serde::Serialize)]
pub struct ChurnResult {
    pub cycles: usize,
    pub signalling_per_cycle: usize,
    pub media_per_cycle: usize,
    pub seconds: f64,
    pub samples: Vec<ChurnSample>,
    /// Over the samples from the end of warm-up on.
    #[serde(flatten)]
    pub growth: Growth,
}

/// One row of a resource table: a label (cycle or second) and the sample.
fn print_resources(
    label: &str,
    rows: impl Iterator<Item = (String, ResourceSample)>,
    extra: &[(&str, Vec<String>)],
) {
    print!(
        "{:>7} {:>10} {:>5} {:>8} {:>9} {:>6} {:>13}",
        label, "RSS KiB", "fds", "threads", "sessions", "peers", "participants"
    );
    for (name, _) in extra {
        print!(" {name:>12}");
    }
    println!();
    for (i, (at, s)) in rows.enumerate() {
        print!(
            "{:>7} {:>10} {:>5} {:>8} {:>9} {:>6} {:>13}",
            at, s.rss_kib, s.fds, s.threads, s.sessions, s.peer_connections, s.participants
        );
        for (_, column) in extra {
            print!(" {:>12}", column.get(i).map_or("", String::as_str));
        }
        println!();
    }
}

/// `facerelay bench churn`: prints [`measure_churn`]'s samples as a table and JSON.
pub async fn churn(args: ChurnBenchArgs) -> anyhow::Result<()> {
    let result = measure_churn(&args).await?;
    println!(
        "churn: {} cycles of {} signalling-only and {} media participants in {:.0} s",
        result.cycles, result.signalling_per_cycle, result.media_per_cycle, result.seconds
    );
    print_resources(
        "cycle",
        result
            .samples
            .iter()
            .map(|s| (s.cycle.to_string(), s.resources)),
        &[],
    );
    print_growth(&format!("cycle {}", args.warmup), &result.growth);
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// Participants join and leave a server in this process, cycle after cycle; the process's
/// memory, descriptors, threads and live objects are sampled after warm-up and every
/// `args.every` cycles.
pub async fn measure_churn(args: &ChurnBenchArgs) -> anyhow::Result<ChurnResult> {
    if args.cycles == 0 || args.every == 0 || args.warmup >= args.cycles {
        bail!("--cycles must exceed --warmup, and --every be at least 1");
    }
    let config = bench_config(args.signalling + args.media + 1);
    let settings = RtcSettings::from_config(&config);
    let encoder = EncoderSettings {
        bitrate_bps: 500_000,
        max_frame_rate: 30.0,
        keyframe_interval: 0,
    };
    let server = RunningServer::start(config, Arc::new(IdentityStage)).await?;
    let url = server.ws_url();
    let started = Instant::now();
    let mut samples = Vec::new();
    for cycle in 1..=args.cycles {
        let room = format!("churn-{}", cycle % 4);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..args.signalling {
            let (url, room) = (url.clone(), room.clone());
            let offer = args.offer;
            tasks.spawn(async move { signal_only(&url, &room, &format!("s{i}"), offer).await });
        }
        for i in 0..args.media {
            let (url, room) = (url.clone(), room.clone());
            let settings = settings.clone();
            tasks.spawn(async move {
                let mut c = Client::join(
                    &url,
                    &room,
                    &format!("m{i}"),
                    VIDEO_ONLY,
                    &settings,
                    encoder,
                )
                .await?;
                c.wait_ready(Duration::from_secs(10)).await?;
                for n in 0..5u16 {
                    c.send_video(&numbered_frame(320, 240, n), u32::from(n) * 3000)
                        .await?;
                }
                if i % 2 == 0 {
                    c.close().await;
                } else {
                    c.vanish();
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.context("a churn participant panicked")??;
        }
        // Everyone gone before the next cycle (a vanished one within the ICE timeout).
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.app.directory.stats().participants > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if cycle == args.warmup || cycle % args.every == 0 || cycle == args.cycles {
            // Let closed connections finish their teardown before sampling.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let s = ResourceSample::take(&server);
            eprintln!(
                "bench churn: cycle {cycle}: RSS {} KiB, {} fds, {} threads",
                s.rss_kib, s.fds, s.threads
            );
            samples.push(ChurnSample {
                cycle,
                resources: s,
            });
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    server.shutdown().await?;
    let growth = Growth::after(
        samples
            .iter()
            .filter(|s| s.cycle >= args.warmup)
            .map(|s| &s.resources),
    )?;
    Ok(ChurnResult {
        cycles: args.cycles,
        signalling_per_cycle: args.signalling,
        media_per_cycle: args.media,
        seconds: (seconds * 10.0).round() / 10.0,
        growth,
        samples,
    })
}

fn print_growth(from: &str, g: &Growth) {
    println!(
        "after warm-up ({from}): RSS {:+.1} % (mean of the later half of the samples against the earlier half), fds {:+}, threads {:+}",
        g.rss_growth_percent, g.fds_growth, g.threads_growth
    );
}

#[derive(Debug, Clone, clap::Args)]
pub struct SoakBenchArgs {
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 1200)]
    pub seconds: u64,
    /// Publishers, in rooms of four: each joins, sends 320x240 video at 15 fps and receives the
    /// others', leaves after `--stay` seconds (every other time without saying goodbye) and
    /// joins again.
    #[arg(long, default_value_t = 8)]
    pub publishers: usize,
    /// Participants that only signal, joining and leaving over and over.
    #[arg(long, default_value_t = 4)]
    pub signalling: usize,
    /// Seconds a publisher stays before it leaves and joins again.
    #[arg(long, default_value_t = 60)]
    pub stay: u64,
    /// Seconds before the baseline sample.
    #[arg(long, default_value_t = 120)]
    pub warmup: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 30)]
    pub every: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct SoakSample {
    pub second: u64,
    /// Video frames the publishers sent and received (decoded) so far.
    pub frames_sent: u64,
    pub frames_received: u64,
    #[serde(flatten)]
    pub resources: ResourceSample,
}

#[derive(Debug, serde::Serialize)]
pub struct SoakResult {
    pub seconds: u64,
    pub publishers: usize,
    pub signalling: usize,
    /// Joins of publishers and signalling-only participants, and those that failed.
    pub joins: u64,
    pub failed_joins: u64,
    pub samples: Vec<SoakSample>,
    #[serde(flatten)]
    pub growth: Growth,
}

/// Counters the soak's participants share.
#[derive(Default)]
struct SoakCounters {
    sent: std::sync::atomic::AtomicU64,
    received: std::sync::atomic::AtomicU64,
    joins: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
}

/// `facerelay bench soak`: publishers and signalling-only participants come and go for a set
/// time while the process is sampled; prints the table, the growth after warm-up and JSON.
pub async fn soak(args: SoakBenchArgs) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    if args.seconds <= args.warmup || args.every == 0 || args.publishers == 0 {
        bail!("--seconds must exceed --warmup, and --every and --publishers be at least 1");
    }
    let config = bench_config(args.publishers + args.signalling + 1);
    let settings = RtcSettings::from_config(&config);
    let server = RunningServer::start(config, Arc::new(IdentityStage)).await?;
    let url = server.ws_url();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let counters = Arc::new(SoakCounters::default());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.publishers {
        let (url, settings, counters) = (url.clone(), settings.clone(), counters.clone());
        // Staggered, so that someone is always joining or leaving.
        let offset = Duration::from_secs(args.stay) * i as u32 / args.publishers as u32;
        let stay = Duration::from_secs(args.stay);
        tasks.spawn(async move {
            tokio::time::sleep(offset).await;
            let mut round = 0usize;
            while Instant::now() < deadline {
                round += 1;
                counters.joins.fetch_add(1, Relaxed);
                let room = format!("soak-{}", i / 4);
                if soak_publisher(
                    &url,
                    &room,
                    i,
                    &settings,
                    stay.min(deadline - Instant::now()),
                    round % 2 == 0,
                    &counters,
                )
                .await
                .is_err()
                {
                    counters.failed.fetch_add(1, Relaxed);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
    }
    for i in 0..args.signalling {
        let (url, counters) = (url.clone(), counters.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                counters.joins.fetch_add(1, Relaxed);
                if signal_only(&url, "soak-signalling", &format!("s{i}"), false)
                    .await
                    .is_err()
                {
                    counters.failed.fetch_add(1, Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
    let mut samples = Vec::new();
    let mut next = started + Duration::from_secs(args.every.min(args.warmup).max(1));
    loop {
        tokio::time::sleep_until(next.into()).await;
        let second = started.elapsed().as_secs();
        let s = SoakSample {
            second,
            frames_sent: counters.sent.load(Relaxed),
            frames_received: counters.received.load(Relaxed),
            resources: ResourceSample::take(&server),
        };
        eprintln!(
            "bench soak: {second} s: RSS {} KiB, {} fds, {} threads, {} peers",
            s.resources.rss_kib, s.resources.fds, s.resources.threads, s.resources.peer_connections
        );
        samples.push(s);
        if next >= deadline {
            break;
        }
        next = (next + Duration::from_secs(args.every)).min(deadline);
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a soak participant panicked")?;
    }
    server.shutdown().await?;
    let growth = Growth::after(
        samples
            .iter()
            .filter(|s| s.second >= args.warmup)
            .map(|s| &s.resources),
    )?;
    let result = SoakResult {
        seconds: args.seconds,
        publishers: args.publishers,
        signalling: args.signalling,
        joins: counters.joins.load(Relaxed),
        failed_joins: counters.failed.load(Relaxed),
        growth,
        samples,
    };
    println!(
        "soak: {} s, {} publishers (rooms of 4, rejoining every {} s), {} signalling-only; {} joins, {} failed",
        result.seconds, result.publishers, args.stay, result.signalling, result.joins, result.failed_joins
    );
    let sent: Vec<String> = result
        .samples
        .iter()
        .map(|s| s.frames_sent.to_string())
        .collect();
    let received: Vec<String> = result
        .samples
        .iter()
        .map(|s| s.frames_received.to_string())
        .collect();
    print_resources(
        "second",
        result
            .samples
            .iter()
            .map(|s| (s.second.to_string(), s.resources)),
        &[("frames sent", sent), ("received", received)],
    );
    print_growth(&format!("{} s", args.warmup), &result.growth);
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// One stay of a soak publisher: join, publish and receive for `stay`, leave (or vanish).
async fn soak_publisher(
    url: &str,
    room: &str,
    i: usize,
    settings: &RtcSettings,
    stay: Duration,
    vanish: bool,
    counters: &SoakCounters,
) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let encoder = EncoderSettings {
        bitrate_bps: 300_000,
        max_frame_rate: 15.0,
        keyframe_interval: 0,
    };
    let mut c = Client::join(url, room, &format!("p{i}"), VIDEO_ONLY, settings, encoder).await?;
    c.wait_ready(Duration::from_secs(10)).await?;
    let until = Instant::now() + stay;
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / 15));
    let mut n = 0u16;
    while Instant::now() < until {
        tick.tick().await;
        c.send_video(&numbered_frame(320, 240, n), u32::from(n) * 6000)
            .await?;
        counters.sent.fetch_add(1, Relaxed);
        n = n.wrapping_add(1);
        while let Some(r) = c.recv(Duration::ZERO).await {
            if matches!(r, Received::Video { .. }) {
                counters.received.fetch_add(1, Relaxed);
            }
        }
    }
    if vanish {
        c.vanish();
    } else {
        c.close().await;
    }
    Ok(())
}

/// A participant that only signals: joins `room` and leaves.
async fn signal_only(url: &str, room: &str, name: &str, offer: bool) -> anyhow::Result<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let join = serde_json::json!({"type": "join", "room": room, "name": name});
    ws.send(Message::text(join.to_string())).await?;
    // The message of type `want` (or an error) first.
    let mut want = "welcome";
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str())?;
                if v["type"] == "error" {
                    bail!("refused: {v}");
                }
                if v["type"] != want {
                    continue;
                }
                if want == "welcome" && offer {
                    let msg =
                        serde_json::json!({"type": "offer", "sdp": crate::testkit::BROWSER_OFFER});
                    ws.send(Message::text(msg.to_string())).await?;
                    want = "answer";
                    continue;
                }
                break;
            }
            Ok(Some(Ok(_))) => {}
            _ => bail!("no {want} within 10 s"),
        }
    }
    if offer {
        // Gone without a word, as a closed tab.
        drop(ws);
        return Ok(());
    }
    ws.send(Message::text(r#"{"type":"leave"}"#)).await?;
    ws.close(None).await?;
    Ok(())
}
