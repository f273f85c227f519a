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
/// Prints the server-added latency (last RTP packet of a frame in → its re-encoded frame queued
/// for the first subscriber) for each resolution.
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
    let mut b = Client::join(
        &url,
        "bench",
        "B",
        Publish {
            video: false,
            audio: false,
        },
        &settings,
        encoder,
    )
    .await?;
    let mut a = Client::join(
        &url,
        "bench",
        "A",
        Publish {
            video: true,
            audio: false,
        },
        &settings,
        encoder,
    )
    .await?;
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
