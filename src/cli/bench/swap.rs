//! `facerelay bench swap`: median time of each pipeline stage per frame, at 640x480 and
//! 1280x720 with one face, printed as a table and as JSON. A program that prints figures, not a
//! test: nothing here fails because a machine is slow.

use std::time::Duration;

use image::imageops::FilterType;
use image::RgbImage;
use serde::Serialize;

use crate::swap::{color, Engine, Selection, StageTimings, SwapError};

/// Medians of one frame size, in milliseconds (to the microsecond).
#[derive(Debug, Clone, Serialize)]
pub struct SizeResult {
    pub width: u32,
    pub height: u32,
    pub frames: usize,
    pub faces_swapped: usize,
    pub median_ms: StageMillis,
}

/// [`StageTimings`] in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct StageMillis {
    pub letterbox: f64,
    pub detect_run: f64,
    pub detect_post: f64,
    pub align: f64,
    pub swap_run: f64,
    pub colour_out: f64,
    pub paste: f64,
    /// Everything but model runs (`total` minus the `*_run` stages, frame by frame).
    pub cpu_outside_models: f64,
    pub total: f64,
}

fn median(mut v: Vec<Duration>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort();
    let mid = v.len() / 2;
    let d = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2
    };
    // Whole microseconds: finer digits are noise on any machine.
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Runs `frames` swaps of `target` (resized to each size) after `warmup` unmeasured ones.
pub fn run(
    engine: &mut Engine,
    source_photo: &RgbImage,
    target: &RgbImage,
    sizes: &[(u32, u32)],
    warmup: usize,
    frames: usize,
) -> Result<Vec<SizeResult>, SwapError> {
    let source = engine.source_face(source_photo)?;
    let mut results = Vec::new();
    for &(w, h) in sizes {
        let resized = image::imageops::resize(target, w, h, FilterType::Triangle);
        let original = color::rgb_to_i420(&resized)?;
        let mut samples: Vec<StageTimings> = Vec::with_capacity(frames);
        let mut faces = 0;
        for i in 0..warmup + frames {
            let mut frame = original.clone();
            let report = engine.swap_frame(&mut frame, &source, &Selection::Largest)?;
            if i >= warmup {
                faces = faces.max(report.swapped.len());
                samples.push(report.timings);
            }
        }
        let pick = |f: fn(&StageTimings) -> Duration| median(samples.iter().map(f).collect());
        results.push(SizeResult {
            width: w,
            height: h,
            frames,
            faces_swapped: faces,
            median_ms: StageMillis {
                letterbox: pick(|t| t.letterbox),
                detect_run: pick(|t| t.detect_run),
                detect_post: pick(|t| t.detect_post),
                align: pick(|t| t.align),
                swap_run: pick(|t| t.swap_run),
                colour_out: pick(|t| t.colour_out),
                paste: pick(|t| t.paste),
                cpu_outside_models: pick(|t| t.cpu()),
                total: pick(|t| t.total),
            },
        });
    }
    Ok(results)
}

/// A table row: label and the stage it shows.
type Row = (&'static str, fn(&StageMillis) -> f64);

/// The results as a fixed-width table.
pub fn table(results: &[SizeResult]) -> String {
    let mut out = String::from("stage (median ms)       ");
    for r in results {
        out += &format!("{:>12}", format!("{}x{}", r.width, r.height));
    }
    out.push('\n');
    let rows: [Row; 9] = [
        ("letterbox (I420->RGB)", |m| m.letterbox),
        ("detector run", |m| m.detect_run),
        ("detect post (NMS)", |m| m.detect_post),
        ("align (crop warp)", |m| m.align),
        ("swapper run", |m| m.swap_run),
        ("colour out (RGB->YUV)", |m| m.colour_out),
        ("paste-back", |m| m.paste),
        ("CPU outside models", |m| m.cpu_outside_models),
        ("total per frame", |m| m.total),
    ];
    for (name, f) in rows {
        out += &format!("{name:<24}");
        for r in results {
            out += &format!("{:>12.3}", f(&r.median_ms));
        }
        out.push('\n');
    }
    out
}
