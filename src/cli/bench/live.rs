//! `facerelay bench live`: N synthetic publishers in-process, each feeding a real
//! [`Pipeline`] (openh264 decode ▸ [`LiveSwap`] ▸ encode) at its offered frame rate, with one
//! shared codec pool and one set of model schedulers, as the server runs them. No network.
//!
//! Each publisher sends a pre-encoded loop of the test card whose face drifts slowly sideways
//! (2 s, IDR first, so the loop decodes cleanly), so the measured CPU is the server's, not the
//! publishers'. The first second of each run is warm-up and not measured.
//!
//! A program that prints figures, not a test: nothing here fails because a machine is slow.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use image::RgbImage;
use serde::Serialize;

use crate::config::Config;
use crate::infer::scheduler::SchedulerStats;
use crate::infer::Provider;
use crate::media::pipeline::PipelineMetrics;
use crate::media::pipeline::{
    CodecPool, InputUnit, OutputSink, OutputUnit, Pipeline, PipelineSettings,
};
use crate::media::{EncoderSettings, FrameStage, StreamId, VideoEncoder};
use crate::swap::live::LiveSwap;
use crate::swap::{color, fixtures_dir, load_image, Embedding, SourceFace};

const WARMUP: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ep {
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LiveBenchArgs {
    /// Concurrent publishers; a list runs one measurement per entry, e.g. 1,2,4,8.
    #[arg(long, default_value = "1", value_delimiter = ',')]
    pub sessions: Vec<usize>,
    /// Measured seconds per run (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    #[arg(long, default_value = "640x480")]
    pub resolution: String,
    /// Frame rate each publisher offers.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Execution provider (overrides models.provider).
    #[arg(long, value_enum)]
    pub ep: Option<Ep>,
    /// Folder of the three models (e.g. models/bench from scripts/gen-bench-models.sh);
    /// default: the stand-in models of models/fixtures.
    #[arg(long, conflicts_with = "mesh")]
    pub models: Option<PathBuf>,
    /// The mesh swapper on the packaged set instead: every publisher's camera is the packaged
    /// Newton portrait (a real face), the chosen face Gauss's.
    #[arg(long)]
    pub mesh: bool,
    /// TOML file laid over the built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct LiveRun {
    pub sessions: usize,
    pub resolution: String,
    pub fps_offered: u32,
    pub seconds: f64,
    /// Encoded frames out per second, per session: the slowest and the median session.
    pub fps_min: f64,
    pub fps_median: f64,
    /// Access unit into the pipeline → re-encoded frame out.
    pub latency_ms: Option<LatencyMs>,
    /// Offered frames that did not come out (dropped as stale, refused, lost).
    pub drop_rate: f64,
    /// Share of frames out whose face was swapped.
    pub swapped_share: f64,
    /// Frames whose inference failed (timeout, busy, model error); they went out held or blurred.
    pub swap_errors: u64,
    /// Model runs by batch size (index 0 = batches of 1).
    pub detector_batches: Vec<u64>,
    pub swapper_batches: Vec<u64>,
    /// Process CPU time (all threads) per frame out.
    pub cpu_ms_per_frame: f64,
}

#[derive(Default)]
struct SessionStats {
    frames: u64,
    latencies: Vec<Duration>,
}

struct Sink {
    stats: Arc<Mutex<SessionStats>>,
    window: (Instant, Instant),
}

impl OutputSink for Sink {
    fn send(&mut self, unit: OutputUnit) -> bool {
        let now = Instant::now();
        if now >= self.window.0 && now < self.window.1 {
            let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            s.frames += 1;
            s.latencies
                .push(now.saturating_duration_since(unit.arrived));
        }
        true
    }
}

/// Process CPU time (user + system, all threads) from /proc/self/stat, in USER_HZ ticks
/// (100 per second on Linux, whatever the kernel's HZ). `None` off Linux.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which may hold spaces, so split after its ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The test card shifted `dx` pixels sideways, edges replicated.
fn shifted(card: &RgbImage, dx: i32) -> RgbImage {
    let (w, h) = card.dimensions();
    RgbImage::from_fn(w, h, |x, y| {
        let sx = (x as i32 - dx).clamp(0, w as i32 - 1) as u32;
        *card.get_pixel(sx, y)
    })
}

/// A loop of `n` access units (the first an IDR) of the card drifting ±24 px sideways.
fn encoded_loop(
    card: &RgbImage,
    n: usize,
    fps: u32,
    bitrate: u32,
) -> anyhow::Result<Vec<(Bytes, bool)>> {
    let mut enc = VideoEncoder::new(EncoderSettings {
        bitrate_bps: bitrate,
        max_frame_rate: fps as f32,
        keyframe_interval: 0,
    })?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let phase = i as f64 / n as f64 * std::f64::consts::TAU;
        let frame = color::rgb_to_i420(&shifted(card, (24.0 * phase.sin()).round() as i32))?;
        let e = enc.encode(&frame, i == 0)?;
        if i == 0 && !e.keyframe {
            bail!("the encoder did not start the loop with an IDR");
        }
        out.push((Bytes::from(e.data), e.keyframe));
    }
    Ok(out)
}

/// Two decimals: finer digits are noise on any machine.
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    round2(sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e3)
}

fn delta(after: &[u64], before: &[u64]) -> Vec<u64> {
    after
        .iter()
        .enumerate()
        .map(|(i, a)| a.saturating_sub(before.get(i).copied().unwrap_or(0)))
        .collect()
}

struct Snapshot {
    media: [u64; 4],
    detector: SchedulerStats,
    swapper: SchedulerStats,
    cpu: Option<Duration>,
}

fn snapshot(live: &LiveSwap, m: &PipelineMetrics) -> Snapshot {
    let (detector, swapper) = live.stage_stats();
    let swap = live.metrics();
    Snapshot {
        media: [
            m.units_in.get(),
            m.frames_out.get(),
            swap.swapped_frames.get(),
            swap.swap_errors.get(),
        ],
        detector,
        swapper,
        cpu: cpu_time(),
    }
}

/// One measurement with `n` publishers.
#[allow(clippy::too_many_arguments)]
fn run_one(
    live: &LiveSwap,
    metrics: &Arc<PipelineMetrics>,
    pool: &Arc<CodecPool>,
    settings: PipelineSettings,
    units: &Arc<Vec<(Bytes, bool)>>,
    n: usize,
    run_index: usize,
    args: &LiveBenchArgs,
) -> anyhow::Result<LiveRun> {
    let period = Duration::from_secs_f64(1.0 / f64::from(args.fps.max(1)));
    let start = Instant::now() + Duration::from_millis(50);
    let window = (
        start + WARMUP,
        start + WARMUP + Duration::from_secs(args.seconds),
    );
    let mut stats = Vec::with_capacity(n);
    let mut publishers = Vec::with_capacity(n);
    for i in 0..n {
        let stream = StreamId((run_index * 1000 + i) as u64);
        let s = Arc::new(Mutex::new(SessionStats::default()));
        stats.push(s.clone());
        let pipeline = Pipeline::spawn(
            stream,
            settings,
            pool.clone(),
            metrics.clone(),
            live.open(stream, &format!("bench{i}")),
            Sink { stats: s, window },
        )?;
        let units = units.clone();
        // Publishers are not in step: spread their frame times over one period.
        let offset = period.mul_f64(i as f64 / n as f64);
        publishers.push(
            std::thread::Builder::new()
                .name(format!("publisher-{i}"))
                .spawn(move || {
                    let end = window.1;
                    for k in 0u64.. {
                        let due = start + offset + period.mul_f64(k as f64);
                        if due >= end {
                            break;
                        }
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let (data, keyframe) = units[k as usize % units.len()].clone();
                        pipeline.push(InputUnit {
                            data,
                            timestamp: (k * 3000) as u32,
                            keyframe,
                            arrived: Instant::now(),
                        });
                    }
                    // Dropping the pipeline here stops its thread.
                })?,
        );
    }
    if let Some(wait) = window.0.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    let before = snapshot(live, metrics);
    if let Some(wait) = window.1.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    let after = snapshot(live, metrics);
    for p in publishers {
        let _ = p.join();
    }
    settle(metrics);
    let secs = args.seconds as f64;
    let mut fps: Vec<f64> = Vec::with_capacity(n);
    let mut latencies = Vec::new();
    for s in &stats {
        let s = s.lock().unwrap_or_else(|e| e.into_inner());
        fps.push(round2(s.frames as f64 / secs));
        latencies.extend_from_slice(&s.latencies);
    }
    fps.sort_by(f64::total_cmp);
    latencies.sort();
    let d = |i: usize| after.media[i].saturating_sub(before.media[i]);
    let (units_in, frames_out, swapped, errors) = (d(0), d(1), d(2), d(3));
    let cpu = match (before.cpu, after.cpu) {
        (Some(b), Some(a)) if frames_out > 0 => {
            round2(a.saturating_sub(b).as_secs_f64() * 1e3 / frames_out as f64)
        }
        _ => 0.0,
    };
    Ok(LiveRun {
        sessions: n,
        resolution: args.resolution.clone(),
        fps_offered: args.fps,
        seconds: secs,
        fps_min: fps.first().copied().unwrap_or(0.0),
        fps_median: fps.get(fps.len() / 2).copied().unwrap_or(0.0),
        latency_ms: (!latencies.is_empty()).then(|| LatencyMs {
            p50: percentile(&latencies, 0.5),
            p95: percentile(&latencies, 0.95),
            p99: percentile(&latencies, 0.99),
        }),
        drop_rate: if units_in > 0 {
            ((1.0 - (frames_out as f64 / units_in as f64).min(1.0)) * 1e4).round() / 1e4
        } else {
            0.0
        },
        swapped_share: if frames_out > 0 {
            round2(swapped as f64 / frames_out as f64)
        } else {
            0.0
        },
        swap_errors: errors,
        detector_batches: delta(&after.detector.batch_sizes, &before.detector.batch_sizes),
        swapper_batches: delta(&after.swapper.batch_sizes, &before.swapper.batch_sizes),
        cpu_ms_per_frame: cpu,
    })
}

/// Waits (at most 3 s) until the pipelines, whose inputs are gone, have finished their last
/// frames: the next run, or the process exit, must not overlap a model run still going.
fn settle(metrics: &PipelineMetrics) {
    let progress = || metrics.frames_decoded.get() + metrics.frames_out.get();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last = progress();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let now = progress();
        if now == last {
            return;
        }
        last = now;
    }
}

/// `n×count` for every batch size that ran, e.g. `1×300`.
fn batches(v: &[u64]) -> String {
    let parts: Vec<String> = v
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(i, c)| format!("{}×{c}", i + 1))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

/// The results as a fixed-width table.
pub fn table(runs: &[LiveRun]) -> String {
    let mut out = format!(
        "{:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>12} {:>12} {:>9}\n",
        "sessions",
        "fps min",
        "fps med",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "drop %",
        "swapped",
        "det batches",
        "swap batches",
        "CPU ms/f"
    );
    for r in runs {
        let l = |f: fn(&LatencyMs) -> f64| {
            r.latency_ms
                .as_ref()
                .map_or("-".to_owned(), |l| format!("{:.1}", f(l)))
        };
        out += &format!(
            "{:>8} {:>8.1} {:>8.1} {:>8} {:>8} {:>8} {:>7.1} {:>7.0}% {:>12} {:>12} {:>9.1}\n",
            r.sessions,
            r.fps_min,
            r.fps_median,
            l(|l| l.p50),
            l(|l| l.p95),
            l(|l| l.p99),
            r.drop_rate * 100.0,
            r.swapped_share * 100.0,
            batches(&r.detector_batches),
            batches(&r.swapper_batches),
            r.cpu_ms_per_frame
        );
    }
    out
}

/// A stand-in source when the models find no face in the source photo (generated bench
/// models with random weights): a fixed unit latent. Throughput does not depend on it.
fn fallback_source() -> anyhow::Result<SourceFace> {
    let v = vec![1.0f32; 512];
    let embedding = Embedding::from_raw(&v).context("unit embedding")?;
    let latent = embedding.as_slice().to_vec();
    Ok(SourceFace {
        identity: Some(crate::swap::Identity { embedding, latent }),
        mesh: None,
        detection: crate::swap::Detection {
            score: 1.0,
            bbox: [0.0; 4],
            kps: [[0.0; 2]; 5],
        },
    })
}

pub fn run(args: &LiveBenchArgs) -> anyhow::Result<()> {
    let (w, h) = super::parse_resolution(&args.resolution)?;
    if args.sessions.is_empty() || args.sessions.iter().any(|&n| n == 0 || n > 256) {
        bail!("--sessions: each entry within 1..=256");
    }
    let mut config = Config::load(args.config.as_deref())?;
    config.models = match &args.models {
        _ if args.mesh => {
            config.swap.swapper = crate::swap::SwapperChoice::Mesh;
            config.models.clone()
        }
        Some(dir) => {
            let mut m = config.models.clone();
            m.dir = dir.clone();
            m
        }
        None => config.models.with_fixtures(),
    };
    if let Some(ep) = args.ep {
        config.models.provider = match ep {
            Ep::Cpu => Provider::Cpu,
            Ep::Cuda => Provider::Cuda,
        };
    }
    // Every publisher holds a face: admission must not be what limits the bench.
    let max_sessions = args.sessions.iter().copied().max().unwrap_or(1);
    config.swap.capacity = config.swap.capacity.max(max_sessions);
    let metrics = Arc::new(PipelineMetrics::default());
    let live =
        LiveSwap::load(&config.models, &config.swap).context("cannot start the live swap")?;

    let photos = config.models.packaged_dir.join("photos");
    let (source_path, camera_path) = if args.mesh {
        (photos.join("gauss.png"), photos.join("newton.png"))
    } else {
        (
            fixtures_dir().join("testcard_source.jpg"),
            fixtures_dir().join("testcard_target.png"),
        )
    };
    let source_photo = load_image(&source_path, &config.swap)?;
    let source = match live.source_face(&source_photo) {
        Ok(s) => s,
        Err(e) if args.mesh => anyhow::bail!("no source face in {}: {e}", source_path.display()),
        Err(e) => {
            eprintln!("no source face from the test card ({e}); using a fixed latent");
            fallback_source()?
        }
    };
    let source = Arc::new(source);
    for i in 0..max_sessions {
        live.faces()
            .set(&format!("bench{i}"), source.clone())
            .context("admission")?;
    }
    let mut card = load_image(&camera_path, &config.swap)?;
    if args.mesh {
        // The portrait's middle at 4:3, so the face keeps its shape at 640x480.
        let (cw, ch) = (card.width().min(card.height() * 4 / 3), card.height());
        card = image::imageops::crop_imm(&card, (card.width() - cw) / 2, 0, cw, ch).to_image();
    }
    let card = image::imageops::resize(&card, w, h, image::imageops::FilterType::Triangle);
    let units = Arc::new(encoded_loop(
        &card,
        2 * args.fps.max(1) as usize,
        args.fps,
        config.media.video_bitrate_bps,
    )?);
    let settings = PipelineSettings {
        encoder: EncoderSettings {
            bitrate_bps: config.media.video_bitrate_bps,
            max_frame_rate: args.fps as f32,
            keyframe_interval: config.media.keyframe_interval,
        },
        max_frame_pixels: config.media.max_frame_pixels,
    };
    let pool = CodecPool::new(config.codec_threads());
    let mut runs = Vec::new();
    for (index, &n) in args.sessions.iter().enumerate() {
        eprintln!("bench live: {n} session(s), {} s ...", args.seconds);
        runs.push(run_one(
            &live, &metrics, &pool, settings, &units, n, index, args,
        )?);
    }
    println!(
        "live swap ({} swapper), {} @ {} fps offered, models {} (provider {}), detect_every {}, {} codec threads",
        live.swapper_name(),
        args.resolution,
        args.fps,
        if args.mesh { &config.models.packaged_dir } else { &config.models.dir }.display(),
        config.models.provider,
        config.swap.detect_every,
        config.codec_threads()
    );
    print!("{}", table(&runs));
    println!("{}", serde_json::to_string(&runs)?);
    Ok(())
}
