//! `facerelay bench watermark`: how often `facerelay verify` finds the watermark in frames
//! the live stage swapped, after the server's encode and one more H.264 encode (a recording) at
//! 640×480 and `--bitrate`, and how often it flags frames that were never swapped.
//!
//! The footage: every face the detector finds in the packaged photos (tiles at four scales)
//! becomes a "camera" sequence: a 4:3 window around the face (the face about 30–45 % of the
//! frame's height) drifting and zooming slowly, resampled to 640×480, with sensor-like noise.
//! Each sequence runs twice through the real mesh stage: once with a face chosen (swapped and
//! marked) and once without (the same real faces, unmarked). Both go through the server's
//! encoder (`media.video_bitrate_bps`), a decoder, the recording's encoder and a decoder
//! again, and every frame is scored.
//!
//! A program that prints figures (a table and JSON), not a test.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use image::RgbImage;
use serde::Serialize;

use crate::config::Config;
use crate::media::{watermark, EncoderSettings, FrameStage, StreamId, VideoDecoder, VideoEncoder};
use crate::swap::live::LiveSwap;
use crate::swap::{color, load_image, SwapperChoice};

#[derive(Debug, Clone, clap::Args)]
pub struct WatermarkBenchArgs {
    /// Frames per face sequence.
    #[arg(long, default_value_t = 90)]
    pub frames: usize,
    /// Bit rate of the recording's re-encode, bits per second.
    #[arg(long, default_value_t = 1_000_000)]
    pub bitrate: u32,
    /// At most this many face sequences (0: every face found).
    #[arg(long, default_value_t = 0)]
    pub faces: usize,
    /// TOML file laid over the built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct WatermarkRun {
    pub sequences: usize,
    pub frames_per_sequence: usize,
    pub server_bitrate_bps: u32,
    pub recording_bitrate_bps: u32,
    /// What the recording's encoder produced on average, at 30 frames per second.
    pub recording_actual_bps: u64,
    /// Frames the stage sent with a swapped face (swapped or held), and how many of them the
    /// detector found after the recording.
    pub swapped_frames: usize,
    pub detected: usize,
    pub detection_rate: f64,
    /// Frames of the marked runs the stage could not swap (blurred: no mark expected).
    pub not_swapped_frames: usize,
    /// Frames never swapped, and how many the detector flagged.
    pub unmarked_frames: usize,
    pub false_positives: usize,
    pub false_positive_rate: f64,
    /// The same frames each read alone, as `verify` reads a still image.
    pub still_detection_rate: f64,
    pub still_false_positive_rate: f64,
    /// Score percentiles: the swapped frames' 1st and 50th, the unmarked frames' 50th, 99.9th
    /// and largest.
    pub swapped_score_p1: f32,
    pub swapped_score_p50: f32,
    pub unmarked_score_p50: f32,
    pub unmarked_score_p999: f32,
    pub unmarked_score_max: f32,
    pub threshold: f32,
    /// Luma PSNR of the marked frame against the same frame swapped without the mark, dB
    /// (median; the mark's cost to the picture).
    pub mark_psnr_db: f64,
}

/// Faces (boxes in photo pixels) the live stage's detector finds in `photo`, at four scales
/// of tiles, duplicates merged.
fn faces_in(live: &LiveSwap, photo: &RgbImage) -> anyhow::Result<Vec<[f32; 4]>> {
    let (pw, ph) = photo.dimensions();
    let mut found: Vec<(f32, [f32; 4])> = Vec::new();
    for div in [1u32, 2, 4, 8] {
        let th = (ph / div).max(64) & !1;
        let tw = (th * 4 / 3).min(pw) & !1;
        let step = (th / 2).max(1);
        let mut y = 0;
        while y + th <= ph {
            let mut x = 0;
            while x + tw <= pw {
                let tile = image::imageops::crop_imm(photo, x, y, tw, th).to_image();
                let frame = color::rgb_to_i420(&tile)?;
                for d in live.detect(&frame).unwrap_or_default() {
                    let b = [
                        d.bbox[0] + x as f32,
                        d.bbox[1] + y as f32,
                        d.bbox[2] + x as f32,
                        d.bbox[3] + y as f32,
                    ];
                    // Faces cut by the tile's edge are found whole in another tile.
                    let inside = d.bbox[0] > 2.0
                        && d.bbox[1] > 2.0
                        && d.bbox[2] < tw as f32 - 2.0
                        && d.bbox[3] < th as f32 - 2.0;
                    if inside && d.score > 0.6 {
                        found.push((d.score, b));
                    }
                }
                x += step;
            }
            y += step;
        }
    }
    found.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut kept: Vec<[f32; 4]> = Vec::new();
    for (_, b) in found {
        if kept.iter().all(|k| crate::swap::detect::iou(k, &b) < 0.2) {
            kept.push(b);
        }
    }
    Ok(kept)
}

/// Deterministic noise, roughly Gaussian with σ ≈ 2 levels.
fn noise(i: u64) -> f32 {
    let mut z = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let s: f32 = (0..4)
        .map(|k| ((z >> (16 * k)) & 0xffff) as f32 / 65535.0)
        .sum();
    (s - 2.0) * 3.5
}

/// Frame `t` of the camera sequence around face `b` of `photo`.
fn camera_frame(photo: &RgbImage, b: &[f32; 4], seq: usize, t: usize) -> RgbImage {
    let (w, h) = (640u32, 480u32);
    let face_h = (b[3] - b[1]).max(8.0);
    // The face fills 30-45 % of the frame's height, depending on the sequence.
    let share = 0.30 + 0.15 * ((seq * 7) % 10) as f32 / 9.0;
    let tf = t as f32;
    let zoom = 1.0 + 0.05 * (tf / 23.0).sin();
    let win_h = face_h / share * zoom;
    let scale = win_h / h as f32;
    let cx = (b[0] + b[2]) / 2.0 + 0.08 * win_h * (tf / 17.0).sin();
    let cy = (b[1] + b[3]) / 2.0 + 0.04 * win_h * (tf / 29.0).sin();
    let (x0, y0) = (cx - scale * w as f32 / 2.0, cy - scale * h as f32 / 2.0);
    let (pw, ph) = (photo.width() as f32, photo.height() as f32);
    let mut out = RgbImage::new(w, h);
    for (x, y, px) in out.enumerate_pixels_mut() {
        let sx = (x0 + (x as f32 + 0.5) * scale - 0.5).clamp(0.0, pw - 1.001);
        let sy = (y0 + (y as f32 + 0.5) * scale - 0.5).clamp(0.0, ph - 1.001);
        let (ix, iy) = (sx as u32, sy as u32);
        let (fx, fy) = (sx - ix as f32, sy - iy as f32);
        let n = noise(((seq as u64) << 40) ^ ((t as u64) << 20) ^ u64::from(y * w + x));
        for c in 0..3 {
            let p = |xx: u32, yy: u32| f32::from(photo.get_pixel(xx, yy)[c]);
            let top = p(ix, iy) * (1.0 - fx) + p(ix + 1, iy) * fx;
            let bottom = p(ix, iy + 1) * (1.0 - fx) + p(ix + 1, iy + 1) * fx;
            px[c] = (top * (1.0 - fy) + bottom * fy + n)
                .round()
                .clamp(0.0, 255.0) as u8;
        }
    }
    out
}

fn percentile(sorted: &[f32], p: f64) -> f32 {
    if sorted.is_empty() {
        return f32::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Encoder and decoder of one hop.
struct Hop {
    encoder: VideoEncoder,
    decoder: VideoDecoder,
    /// Bytes and frames encoded, for the bit rate the encoder really produced.
    bytes: u64,
    frames: u64,
}

impl Hop {
    fn new(bitrate_bps: u32) -> anyhow::Result<Self> {
        Ok(Self {
            encoder: VideoEncoder::new(EncoderSettings {
                bitrate_bps,
                max_frame_rate: 30.0,
                keyframe_interval: 0,
            })?,
            decoder: VideoDecoder::new(1 << 24)?,
            bytes: 0,
            frames: 0,
        })
    }

    fn pass(
        &mut self,
        frame: &crate::media::I420Frame,
        first: bool,
    ) -> anyhow::Result<crate::media::I420Frame> {
        let au = self.encoder.encode(frame, first)?;
        self.bytes += au.data.len() as u64;
        self.frames += 1;
        self.decoder
            .decode(&au.data)?
            .context("the decoder returned no picture")
    }
}

/// Measures with `config` (its swapper is forced to the mesh tier).
pub fn measure(
    config: &Config,
    frames: usize,
    recording_bitrate: u32,
    max_faces: usize,
) -> anyhow::Result<WatermarkRun> {
    let mut swap = config.swap.clone();
    swap.swapper = SwapperChoice::Mesh;
    swap.capacity = swap.capacity.max(2);
    let mut plain = swap.clone();
    plain.watermark = false;
    let live = LiveSwap::load(&config.models, &swap)
        .context("cannot start the mesh stage (is the packaged set installed?)")?;
    // The same stage without the mark, for the mark's cost to the picture.
    let live_plain = LiveSwap::load(&config.models, &plain)?;
    let photos = config.models.packaged_dir.join("photos");
    let source_photo = load_image(&photos.join("gauss.png"), &swap)?;
    let source = Arc::new(live.source_face(&source_photo)?);
    live.faces().set("marked", source.clone())?;
    live_plain.faces().set("marked", source)?;

    let mut sequences = Vec::new();
    for name in [
        "gauss.png",
        "newton.png",
        "readme.jpg",
        "solvay_conference_1927.jpg",
    ] {
        let photo = load_image(&photos.join(name), &swap)?;
        for b in faces_in(&live, &photo)? {
            sequences.push((name, b));
        }
    }
    // The main portraits first, then the group photos' faces.
    if max_faces > 0 {
        sequences.truncate(max_faces);
    }
    anyhow::ensure!(
        !sequences.is_empty(),
        "no face found in the packaged photos"
    );
    let photo_of = |name: &str| load_image(&photos.join(name), &swap);
    let (mut swapped, mut unmarked, mut psnr) = (Vec::new(), Vec::new(), Vec::new());
    let (mut swapped_stills, mut unmarked_stills) = (Vec::new(), Vec::new());
    let (mut recorded_bytes, mut recorded_frames) = (0u64, 0u64);
    let mut not_swapped = 0;
    let mut loaded: Option<(&str, RgbImage)> = None;
    for (seq, (name, b)) in sequences.iter().enumerate() {
        if loaded.as_ref().is_none_or(|(n, _)| n != name) {
            loaded = Some((name, photo_of(name)?));
        }
        let photo = &loaded.as_ref().expect("loaded above").1;
        eprintln!(
            "bench watermark: sequence {}/{} ({name})",
            seq + 1,
            sequences.len()
        );
        for marked in [true, false] {
            let owner = if marked { "marked" } else { "nobody" };
            let mut stage = live.open(StreamId(2 * seq as u64 + u64::from(marked)), owner);
            // The same swap without the mark, for its cost (marked runs only).
            let mut stage_plain = marked.then(|| live_plain.open(StreamId(seq as u64), owner));
            let mut server = Hop::new(config.media.video_bitrate_bps)?;
            let mut recording = Hop::new(recording_bitrate)?;
            let (mut maps, mut stills, mut flags) = (Vec::new(), Vec::new(), Vec::new());
            for t in 0..frames {
                let mut frame = color::rgb_to_i420(&camera_frame(photo, b, seq, t))?;
                let mut reference = frame.clone();
                stage.process(&mut frame);
                let carries_face = stage.swapped();
                if let Some(plain) = stage_plain.as_mut().filter(|_| carries_face) {
                    plain.process(&mut reference);
                    if plain.swapped() {
                        if let Some(p) = crate::media::y_psnr(&frame, &reference) {
                            psnr.push(p);
                        }
                    }
                }
                let relayed = server.pass(&frame, t == 0)?;
                let recorded = recording.pass(&relayed, t == 0)?;
                let map = watermark::frame_map(&recorded);
                stills.push(map.as_ref().map_or(f32::NEG_INFINITY, |m| m.score()));
                maps.push(map);
                flags.push(carries_face);
            }
            let video = watermark::video_scores(&maps);
            recorded_bytes += recording.bytes;
            recorded_frames += recording.frames;
            for ((score, still), carries_face) in video.into_iter().zip(stills).zip(flags) {
                match (marked, carries_face) {
                    (true, true) => {
                        swapped.push(score);
                        swapped_stills.push(still);
                    }
                    (true, false) => not_swapped += 1,
                    (false, _) => {
                        unmarked.push(score);
                        unmarked_stills.push(still);
                    }
                }
            }
        }
    }
    let detected = swapped
        .iter()
        .filter(|&&s| s > watermark::THRESHOLD)
        .count();
    let false_positives = unmarked
        .iter()
        .filter(|&&s| s > watermark::THRESHOLD)
        .count();
    let above = |v: &[f32]| v.iter().filter(|&&s| s > watermark::THRESHOLD).count();
    let (still_detected, still_fp) = (above(&swapped_stills), above(&unmarked_stills));
    swapped.sort_by(f32::total_cmp);
    unmarked.sort_by(f32::total_cmp);
    psnr.sort_by(f64::total_cmp);
    let rate = |n: usize, d: usize| {
        if d == 0 {
            f64::NAN
        } else {
            n as f64 / d as f64
        }
    };
    Ok(WatermarkRun {
        sequences: sequences.len(),
        frames_per_sequence: frames,
        server_bitrate_bps: config.media.video_bitrate_bps,
        recording_bitrate_bps: recording_bitrate,
        recording_actual_bps: (recorded_bytes * 8 * 30) / recorded_frames.max(1),
        swapped_frames: swapped.len(),
        detected,
        detection_rate: rate(detected, swapped.len()),
        not_swapped_frames: not_swapped,
        unmarked_frames: unmarked.len(),
        false_positives,
        false_positive_rate: rate(false_positives, unmarked.len()),
        still_detection_rate: rate(still_detected, swapped_stills.len()),
        still_false_positive_rate: rate(still_fp, unmarked_stills.len()),
        swapped_score_p1: percentile(&swapped, 0.01),
        swapped_score_p50: percentile(&swapped, 0.5),
        unmarked_score_p50: percentile(&unmarked, 0.5),
        unmarked_score_p999: percentile(&unmarked, 0.999),
        unmarked_score_max: unmarked.last().copied().unwrap_or(f32::NAN),
        threshold: watermark::THRESHOLD,
        mark_psnr_db: psnr.get(psnr.len() / 2).copied().unwrap_or(f64::NAN),
    })
}

pub fn run(args: &WatermarkBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.frames > 0, "--frames must be at least 1");
    let config = Config::load(args.config.as_deref())?;
    let r = measure(&config, args.frames, args.bitrate, args.faces)?;
    println!(
        "watermark after the server's encode ({} kbit/s) and a recording's re-encode ({} kbit/s asked, {} produced), 640x480, {} face sequences x {} frames",
        r.server_bitrate_bps / 1000,
        r.recording_bitrate_bps / 1000,
        r.recording_actual_bps / 1000,
        r.sequences,
        r.frames_per_sequence
    );
    println!(
        "swapped frames detected: {} of {} ({:.2} %); score p1 {:.1}, median {:.1}; {} frames not swapped (blurred)",
        r.detected,
        r.swapped_frames,
        100.0 * r.detection_rate,
        r.swapped_score_p1,
        r.swapped_score_p50,
        r.not_swapped_frames
    );
    println!(
        "unmarked frames flagged: {} of {} ({:.3} %); score median {:.2}, p99.9 {:.2}, max {:.2}; threshold {:.1}",
        r.false_positives,
        r.unmarked_frames,
        100.0 * r.false_positive_rate,
        r.unmarked_score_p50,
        r.unmarked_score_p999,
        r.unmarked_score_max,
        r.threshold
    );
    println!(
        "each frame read alone (as a still): {:.2} % detected, {:.3} % of unmarked flagged",
        100.0 * r.still_detection_rate,
        100.0 * r.still_false_positive_rate
    );
    println!(
        "mark's cost: luma PSNR {:.1} dB (median, whole frame)",
        r.mark_psnr_db
    );
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}
