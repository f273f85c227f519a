//! `facerelay bench mesh`: the mesh tier's CPU cost per face and frame at 640×480, on one core:
//! tracking (ROI from the last landmarks, crop, face mesh run, One Euro filter) and the swap
//! (warp, mask, colour, blend), on the packaged Newton portrait panned across the frame with
//! Gauss's face as the source. Prints a table and JSON; the figures are medians and p95.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::config::Config;
use crate::media::I420Frame;
use crate::swap::color::rgb_to_i420;
use crate::swap::mesh::render::{render, ColourState, RenderScratch, RenderSettings};
use crate::swap::mesh::{self as mesh, FilterSettings, MeshFilter, Roi};
use crate::swap::{load_image, Detection};

#[derive(Debug, clap::Args)]
pub struct MeshBenchArgs {
    /// Frames measured (after 10 of warm-up).
    #[arg(long, default_value_t = 300)]
    pub frames: usize,
    /// Threads ONNX Runtime may use inside the mesh model (1 = the one-core figure).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// TOML file laid over the built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Median and 95th percentile, milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ms {
    pub median: f64,
    pub p95: f64,
}

fn ms(mut v: Vec<Duration>) -> Ms {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    Ms {
        median: (at(0.5) * 100.0).round() / 100.0,
        p95: (at(0.95) * 100.0).round() / 100.0,
    }
}

#[derive(Debug, Serialize)]
pub struct MeshBench {
    pub resolution: &'static str,
    pub frames: usize,
    pub onnx_threads: usize,
    /// One BlazeFace run over the whole frame (only when a face is not tracked yet).
    pub detect: Ms,
    /// ROI, crop, mesh model and filter: what every tracked face costs every frame.
    pub track: Ms,
    /// Warp, mask, colour match and blend of one face.
    pub swap: Ms,
    /// track + swap per face-frame.
    pub total: Ms,
}

/// The packaged portrait, panned: frame `i` of a slow left-right move.
fn camera(photo: &image::RgbImage, i: usize) -> anyhow::Result<I420Frame> {
    let t = (i as f32 / 60.0 * std::f32::consts::TAU).sin();
    let x0 = (96.0 + 40.0 * t) as u32;
    let crop = image::imageops::crop_imm(photo, x0, 0, 576, 432).to_image();
    let scaled = image::imageops::resize(&crop, 640, 480, image::imageops::FilterType::Triangle);
    Ok(rgb_to_i420(&scaled)?)
}

pub fn run(args: &MeshBenchArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    config.models.intra_threads = args.threads.max(1);
    let models = &config.models;
    let rt = crate::infer::runtime(models)?;
    let mut engine = mesh::MeshEngine::load(models, &config.swap)
        .context("the packaged set (scripts/setup.sh installs it)")?;
    let mut blaze = mesh::BlazeFace::load(rt, models, &models.blazeface_path())?;
    let topology = mesh::Topology::load(&models.topology_path())?;
    let photos = models.packaged_dir.join("photos");
    let newton = load_image(&photos.join("newton.png"), &config.swap)?;
    let gauss = load_image(&photos.join("gauss.png"), &config.swap)?;
    let source = engine.source_face(&rgb_to_i420(&gauss)?)?;
    let mesh_source = source.mesh.clone().context("a mesh source")?;
    let frames: Vec<I420Frame> = (0..60)
        .map(|i| camera(&newton, i))
        .collect::<Result<_, _>>()?;

    let first: Detection = *engine
        .detect(&frames[0])?
        .first()
        .context("no face in the bench's camera frames")?;
    let mut raw = engine
        .landmarks(&frames[0], &first)?
        .context("no mesh on the bench's camera frames")?;
    let c = &config.swap;
    let mut filter = MeshFilter::new(
        FilterSettings {
            min_cutoff: c.filter_min_cutoff,
            beta: c.filter_beta,
        },
        &raw,
    );
    let settings = RenderSettings {
        feather: c.mesh_feather,
        colour_smoothing: c.colour_smoothing,
        colour_match: c.colour_match,
        keep_eyes_mouth: c.keep_eyes_mouth,
    };
    let (mut colour, mut scratch) = (ColourState::default(), RenderScratch::default());
    let (mut detect, mut track, mut swap, mut total) = (vec![], vec![], vec![], vec![]);
    for i in 0..args.frames + 10 {
        let mut frame = frames[i % frames.len()].clone();
        let t0 = Instant::now();
        let found = blaze.detect(
            crate::swap::color::Planes::of(&frame),
            c.score_threshold,
            c.nms_threshold,
        )?;
        let t1 = Instant::now();
        anyhow::ensure!(!found.is_empty(), "BlazeFace lost the face in frame {i}");
        let roi = Roi::from_points(&raw).context("degenerate landmarks")?;
        let mesh = engine.track(&frame, &roi)?;
        anyhow::ensure!(
            mesh.presence >= c.mesh_presence,
            "the mesh lost the face in frame {i}"
        );
        raw = mesh.points;
        let scale = {
            let b = mesh::bounds(&raw);
            (b[2] - b[0]).max(1.0)
        };
        let points = filter.update(&raw, 1.0 / 30.0, scale).to_vec();
        let t2 = Instant::now();
        render(
            &mut frame,
            &points,
            &mesh_source,
            &topology,
            &settings,
            &mut colour,
            &mut scratch,
        )
        .context("the face left the frame")?;
        let t3 = Instant::now();
        if i >= 10 {
            detect.push(t1 - t0);
            track.push(t2 - t1);
            swap.push(t3 - t2);
            total.push(t3 - t1);
        }
    }
    let result = MeshBench {
        resolution: "640x480",
        frames: args.frames,
        onnx_threads: config.models.intra_threads,
        detect: ms(detect),
        track: ms(track),
        swap: ms(swap),
        total: ms(total),
    };
    println!(
        "mesh tier, one face at 640x480, {} frames, ONNX Runtime threads {}",
        result.frames, result.onnx_threads
    );
    println!(
        "{:<34} {:>10} {:>10}",
        "stage (per face and frame)", "median ms", "p95 ms"
    );
    for (name, m) in [
        ("detect (BlazeFace, when untracked)", result.detect),
        ("track (crop, mesh, filter)", result.track),
        ("swap (warp, mask, colour, blend)", result.swap),
        ("track + swap", result.total),
    ] {
        println!("{name:<34} {:>10.2} {:>10.2}", m.median, m.p95);
    }
    println!(
        "{}",
        serde_json::to_string(&serde_json::json!({ "bench": "mesh", "result": result }))?
    );
    Ok(())
}
