//! Benchmark programs (`facerelay bench …`): they print figures, a table and JSON, and never
//! fail because the machine is slow.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::config::Config;
use crate::media::synthetic::{numbered_frame, read_frame_number};
use crate::media::{EncoderSettings, IdentityStage};
use crate::rtc::client::{Client, Publish, Received};
use crate::rtc::{LatencySummary, RtcSettings};
use crate::signal::RunningServer;

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
    pub cycle: usize,
    pub rss_kib: u64,
    pub fds: usize,
    pub threads: usize,
    /// Signalling sessions and peer connections still alive, and participants in rooms.
    pub sessions: usize,
    pub peer_connections: usize,
    pub participants: usize,
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
pub struct ChurnResult {
    pub cycles: usize,
    pub signalling_per_cycle: usize,
    pub media_per_cycle: usize,
    pub seconds: f64,
    pub samples: Vec<ResourceSample>,
    /// Mean RSS of the second half of the samples after warm-up against the first half's.
    pub rss_growth_percent: f64,
    /// From the sample after warm-up to the last one.
    pub fds_growth: i64,
    pub threads_growth: i64,
}

/// `facerelay bench churn`: prints [`measure_churn`]'s samples as a table and JSON.
pub async fn churn(args: ChurnBenchArgs) -> anyhow::Result<()> {
    let result = measure_churn(&args).await?;
    println!(
        "churn: {} cycles of {} signalling-only and {} media participants in {:.0} s",
        result.cycles, result.signalling_per_cycle, result.media_per_cycle, result.seconds
    );
    println!(
        "{:>6} {:>10} {:>5} {:>8} {:>9} {:>6} {:>13}",
        "cycle", "RSS KiB", "fds", "threads", "sessions", "peers", "participants"
    );
    for s in &result.samples {
        println!(
            "{:>6} {:>10} {:>5} {:>8} {:>9} {:>6} {:>13}",
            s.cycle, s.rss_kib, s.fds, s.threads, s.sessions, s.peer_connections, s.participants
        );
    }
    println!(
        "after warm-up (cycle {}): RSS {:+.1} % (mean of the later half of the samples against the earlier half), fds {:+}, threads {:+}",
        args.warmup, result.rss_growth_percent, result.fds_growth, result.threads_growth
    );
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
    let mut config = Config::loopback();
    config.media.self_view = false;
    config.rooms.max_total_participants = config
        .rooms
        .max_total_participants
        .max(args.signalling + args.media + 1);
    config.rooms.max_participants = config
        .rooms
        .max_participants
        .max(args.signalling + args.media + 1);
    config.server.max_sessions_per_ip = config
        .server
        .max_sessions_per_ip
        .max(args.signalling + args.media + 1);
    let settings = RtcSettings::from_config(&config);
    let encoder = EncoderSettings {
        bitrate_bps: 500_000,
        max_frame_rate: 30.0,
        keyframe_interval: 0,
    };
    let server = RunningServer::start(config, Arc::new(IdentityStage)).await?;
    let url = server.ws_url();
    let sample = |cycle: usize| {
        let (rss_kib, fds, threads) = process_resources();
        ResourceSample {
            cycle,
            rss_kib,
            fds,
            threads,
            sessions: server.app.live_sessions(),
            peer_connections: crate::rtc::live_connections(),
            participants: server.app.directory.stats().participants,
        }
    };
    let started = Instant::now();
    let mut samples = Vec::new();
    for cycle in 1..=args.cycles {
        let room = format!("churn-{}", cycle % 4);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..args.signalling {
            let (url, room) = (url.clone(), room.clone());
            tasks.spawn(async move { signal_only(&url, &room, &format!("s{i}")).await });
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
            let s = sample(cycle);
            eprintln!(
                "bench churn: cycle {cycle}: RSS {} KiB, {} fds, {} threads",
                s.rss_kib, s.fds, s.threads
            );
            samples.push(s);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    server.shutdown().await?;
    let after: Vec<&ResourceSample> = samples.iter().filter(|s| s.cycle >= args.warmup).collect();
    let (base, last) = match (after.first(), after.last()) {
        (Some(b), Some(l)) => (**b, **l),
        _ => bail!("no sample after warm-up"),
    };
    // RSS moves up and down as the allocator reuses memory: compare the mean of the second
    // half of the samples with the first half's rather than two single samples.
    let mean = |v: &[&ResourceSample]| {
        v.iter().map(|s| s.rss_kib as f64).sum::<f64>() / v.len().max(1) as f64
    };
    let (first_half, second_half) = after.split_at(after.len() / 2);
    let rss_growth = if first_half.is_empty() {
        0.0
    } else {
        mean(second_half) / mean(first_half) - 1.0
    };
    Ok(ChurnResult {
        cycles: args.cycles,
        signalling_per_cycle: args.signalling,
        media_per_cycle: args.media,
        seconds: (seconds * 10.0).round() / 10.0,
        rss_growth_percent: (rss_growth * 1000.0).round() / 10.0,
        fds_growth: last.fds as i64 - base.fds as i64,
        threads_growth: last.threads as i64 - base.threads as i64,
        samples,
    })
}

/// A participant that only signals: joins `room` and leaves.
async fn signal_only(url: &str, room: &str, name: &str) -> anyhow::Result<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let join = serde_json::json!({"type": "join", "room": room, "name": name});
    ws.send(Message::text(join.to_string())).await?;
    // The welcome (or an error) first.
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str())?;
                if v["type"] == "welcome" {
                    break;
                }
                if v["type"] == "error" {
                    bail!("join refused: {v}");
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => bail!("no welcome within 10 s"),
        }
    }
    ws.send(Message::text(r#"{"type":"leave"}"#)).await?;
    ws.close(None).await?;
    Ok(())
}
