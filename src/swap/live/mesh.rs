//! The live stage's mesh tier: per stream, faces tracked with the face mesh and swapped with
//! the mesh swapper ([`crate::swap::mesh`]).
//!
//! ```text
//! codec thread of stream s, per frame (with a face chosen):
//!   tracked faces ─▶ ROI from each face's last landmarks ─▶ crops ─▶ mesh scheduler (one
//!       request with every face) ─▶ presence below swap.mesh_presence: the track ends
//!       ─▶ the box shows something else than on the last frame (the face jumped): the
//!       detector on this frame; the track starts again from its detection, or ends
//!   no track, or every swap.redetect_every frames when more faces are wanted ─▶ detector
//!       scheduler ─▶ new faces (not overlapping a track) ─▶ mesh ─▶ new tracks
//!   each track: One Euro filter ─▶ render the source face onto it ─▶ label
//! ```
//!
//! `swap.selection = "largest"` keeps one track (the largest face found); `"all"` keeps up to
//! `swap.max_faces`, and the detector keeps looking for new faces every `redetect_every`
//! frames.

use std::sync::Arc;
use std::time::Instant;

use super::{draw_label, DetectRunner, Inner, Miss, StreamGuard};
use crate::infer::scheduler::{BatchRunner, Scheduler};
use crate::infer::ModelsConfig;
use crate::media::{I420Frame, StreamId, StreamProcessor};
use crate::swap::color::Planes;
use crate::swap::detect::{iou, Detection};
use crate::swap::geometry::Affine;
use crate::swap::mesh::model::MESH_SIZE;
use crate::swap::mesh::render::{render, ColourState, RenderScratch};
use crate::swap::mesh::{bounds, FaceMesh, FilterSettings, Mesh, MeshFilter, Roi, Topology};
use crate::swap::paste::warp_crop;
use crate::swap::{SelectionMode, SwapConfig, SwapError};

/// One face for the mesh model: its 192² crop (planar RGB in [0,1]) and where it came from.
pub struct MeshJob {
    pub crop: Vec<f32>,
    pub to_frame: Affine,
}

impl MeshJob {
    /// The crop of `roi` in the frame.
    pub fn of(frame: &I420Frame, roi: &Roi) -> Self {
        let to_frame = roi.crop_to_frame(MESH_SIZE);
        let mut crop = vec![0.0; 3 * MESH_SIZE * MESH_SIZE];
        warp_crop(
            Planes::of(frame),
            &to_frame,
            MESH_SIZE,
            1.0 / 255.0,
            0.0,
            &mut crop,
        );
        Self { crop, to_frame }
    }
}

type MeshFn = Box<dyn FnMut(&[f32], &Affine) -> Result<Mesh, SwapError> + Send>;

/// A mesh model instance for the scheduler: all the faces of one frame in, their meshes out.
pub struct MeshRunner {
    run: MeshFn,
}

impl MeshRunner {
    pub fn new(f: impl FnMut(&[f32], &Affine) -> Result<Mesh, SwapError> + Send + 'static) -> Self {
        Self { run: Box::new(f) }
    }

    pub fn load(models: &ModelsConfig) -> Result<Self, SwapError> {
        let rt = crate::infer::runtime(models)?;
        let mut mesh = FaceMesh::load(rt, models, &models.mesh_path())?;
        Ok(Self::new(move |crop, to_frame| {
            mesh.run_crop(crop, to_frame)
        }))
    }
}

impl BatchRunner for MeshRunner {
    type Input = Vec<MeshJob>;
    type Output = Vec<Mesh>;
    type Error = SwapError;

    /// The packaged mesh model is fixed at batch 1; one request carries every face of a frame.
    fn max_batch(&self) -> usize {
        1
    }

    fn run(&mut self, batch: Vec<Vec<MeshJob>>) -> Result<Vec<Vec<Mesh>>, SwapError> {
        batch
            .iter()
            .map(|jobs| {
                jobs.iter()
                    .map(|j| (self.run)(&j.crop, &j.to_frame))
                    .collect()
            })
            .collect()
    }
}

/// The schedulers and topology of the mesh tier.
pub struct MeshModels {
    pub detector: Arc<Scheduler<DetectRunner>>,
    pub mesh: Arc<Scheduler<MeshRunner>>,
    pub topology: Arc<Topology>,
}

/// One tracked face of a stream.
struct FaceTrack {
    /// The mesh model's last landmarks (the next ROI is cut from these).
    raw: Vec<[f32; 2]>,
    filter: MeshFilter,
    colour: ColourState,
    /// What the picture looked like under the landmarks' box on the last frame.
    look: Look,
    /// Its box shows something else on this frame than on the last: the detector checks it.
    unsure: bool,
}

impl FaceTrack {
    fn new(c: &SwapConfig, frame: &I420Frame, points: Vec<[f32; 2]>) -> Self {
        Self {
            filter: MeshFilter::new(filter_settings(c), &points),
            look: Look::of(frame, &bounds(&points)),
            raw: points,
            colour: ColourState::default(),
            unsure: false,
        }
    }

    fn area(&self) -> f32 {
        let b = bounds(&self.raw);
        (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)
    }
}

/// A face box's luma on a coarse grid, less its mean: what a track looked like. A track whose
/// box shows something else on the next frame (the mesh stayed where the face was while the
/// face jumped away, as between frames a busy server skipped) is checked by the detector
/// before anything is drawn on it.
#[derive(Debug, Clone)]
struct Look([f32; LOOK * LOOK]);

/// Grid cells per side of a [`Look`].
const LOOK: usize = 12;

/// Mean difference of two [`Look`]s (luma levels) above which a track is checked.
const LOOK_CHANGED: f32 = 12.0;

impl Look {
    fn of(frame: &I420Frame, b: &[f32; 4]) -> Self {
        let (w, h) = (frame.width() as f32, frame.height() as f32);
        let (y, stride) = (frame.y(), frame.y_stride());
        let mut v = [0.0; LOOK * LOOK];
        for (i, cell) in v.iter_mut().enumerate() {
            let fx = b[0] + (b[2] - b[0]) * ((i % LOOK) as f32 + 0.5) / LOOK as f32;
            let fy = b[1] + (b[3] - b[1]) * ((i / LOOK) as f32 + 0.5) / LOOK as f32;
            let (x, yy) = (
                fx.clamp(0.0, w - 1.0) as usize,
                fy.clamp(0.0, h - 1.0) as usize,
            );
            *cell = f32::from(y[yy * stride + x]);
        }
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        v.iter_mut().for_each(|c| *c -= mean);
        Self(v)
    }

    fn difference(&self, other: &Look) -> f32 {
        let sum: f32 = self
            .0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| (a - b).abs())
            .sum();
        sum / self.0.len() as f32
    }
}

/// Below this overlap a detection is a new face; above it, one already tracked.
const NEW_FACE_IOU: f32 = 0.3;
/// Two tracks overlapping more than this follow the same face: the smaller one ends.
const SAME_FACE_IOU: f32 = 0.5;

/// The per-stream half of the mesh tier, on the stream's codec thread.
pub(super) struct MeshProcessor {
    stream: StreamId,
    owner: String,
    inner: Arc<Inner>,
    tracks: Vec<FaceTrack>,
    /// Frames until the next look for new faces; 0 = look on this frame.
    countdown: u32,
    last: Option<(Instant, (u32, u32))>,
    scratch: RenderScratch,
    guard: StreamGuard,
}

impl MeshProcessor {
    pub(super) fn new(stream: StreamId, owner: &str, inner: Arc<Inner>) -> Self {
        Self {
            stream,
            owner: owner.to_owned(),
            tracks: Vec::new(),
            countdown: 0,
            last: None,
            scratch: RenderScratch::default(),
            guard: inner.guard(),
            inner,
        }
    }

    fn reset(&mut self) {
        self.tracks.clear();
        self.countdown = 0;
        self.last = None;
        self.guard.reset();
    }

    fn max_tracks(config: &SwapConfig) -> usize {
        match config.selection {
            SelectionMode::Largest => 1,
            SelectionMode::All => config.max_faces,
        }
    }

    /// Moves every track to this frame (one mesh request), finds new faces when due, and
    /// returns whether inference failed (the frame then has no trustworthy face position).
    fn track(&mut self, frame: &I420Frame, models: &MeshModels, dt: f32) -> Result<(), ()> {
        let c = &self.inner.config;
        let m = &self.inner.metrics;
        let presence = c.mesh_presence;
        let t0 = Instant::now();
        if !self.tracks.is_empty() {
            let jobs: Vec<MeshJob> = self
                .tracks
                .iter()
                .map(|t| Roi::from_points(&t.raw).map(|roi| MeshJob::of(frame, &roi)))
                .collect::<Option<_>>()
                .ok_or(())?;
            let meshes = models.mesh.infer(self.stream, jobs).map_err(|_| ())?;
            let mut kept = Vec::with_capacity(self.tracks.len());
            for (mut t, mesh) in self.tracks.drain(..).zip(meshes) {
                if mesh.presence >= presence {
                    let b = bounds(&mesh.points);
                    let look = Look::of(frame, &b);
                    t.unsure = look.difference(&t.look) > LOOK_CHANGED;
                    t.look = look;
                    t.filter.update(&mesh.points, dt, (b[2] - b[0]).max(1.0));
                    t.raw = mesh.points;
                    kept.push(t);
                }
            }
            // Two tracks that converged on one face: keep the larger.
            kept.sort_by(|a, b| b.area().total_cmp(&a.area()));
            let mut unique: Vec<FaceTrack> = Vec::with_capacity(kept.len());
            for t in kept {
                let b = bounds(&t.raw);
                if unique
                    .iter()
                    .all(|u| iou(&bounds(&u.raw), &b) <= SAME_FACE_IOU)
                {
                    unique.push(t);
                }
            }
            self.tracks = unique;
        }
        m.swap_align.record(t0.elapsed());

        let max = Self::max_tracks(c);
        let unsure = self.tracks.iter().any(|t| t.unsure);
        if !unsure {
            if self.countdown > 0 && !self.tracks.is_empty() {
                self.countdown -= 1;
                return Ok(());
            }
            if self.tracks.len() >= max {
                return Ok(());
            }
        }
        let t1 = Instant::now();
        let found = models.detector.infer(self.stream, frame.clone());
        m.swap_detect.record(t1.elapsed());
        let mut faces: Vec<Detection> = found.map_err(|_| ())?;
        // An unsure track starts again from the detection (the mesh, cut around where the face
        // was, follows a jump only part of the way); without one, it ends. Its colour stays.
        let mut restarted: Vec<([f32; 4], ColourState)> = Vec::new();
        if unsure {
            m.track_checks.inc();
            for t in std::mem::take(&mut self.tracks) {
                if t.unsure {
                    restarted.push((bounds(&t.raw), t.colour));
                } else {
                    self.tracks.push(t);
                }
            }
        }
        self.countdown = c.redetect_every.saturating_sub(1);
        faces.sort_by(|a, b| b.area().total_cmp(&a.area()));
        let fresh: Vec<Detection> = faces
            .into_iter()
            .filter(|d| {
                self.tracks
                    .iter()
                    .all(|t| iou(&bounds(&t.raw), &d.bbox) <= NEW_FACE_IOU)
            })
            .take(max - self.tracks.len())
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let t2 = Instant::now();
        let jobs = fresh
            .iter()
            .map(|d| MeshJob::of(frame, &Roi::from_detection(d)))
            .collect();
        let meshes = models.mesh.infer(self.stream, jobs).map_err(|_| ())?;
        for (mesh, d) in meshes.into_iter().zip(&fresh) {
            if mesh.presence >= presence {
                let mut track = FaceTrack::new(c, frame, mesh.points);
                if let Some(i) = restarted
                    .iter()
                    .position(|(b, _)| iou(b, &d.bbox) > NEW_FACE_IOU)
                {
                    track.colour = restarted.swap_remove(i).1;
                }
                self.tracks.push(track);
            }
        }
        m.swap_align.record(t2.elapsed());
        Ok(())
    }
}

pub(super) fn filter_settings(c: &SwapConfig) -> FilterSettings {
    FilterSettings {
        min_cutoff: c.filter_min_cutoff,
        beta: c.filter_beta,
    }
}

impl MeshProcessor {
    /// Tracks and swaps the faces of `frame` with `source`; returns the boxes written.
    fn swap(
        &mut self,
        frame: &mut I420Frame,
        source: &crate::swap::SourceFace,
    ) -> Result<Vec<[u32; 4]>, Miss> {
        // A face computed for another tier cannot be worn here.
        let mesh_source = source.mesh.clone().ok_or(Miss::Error)?;
        let inner = self.inner.clone();
        let models = inner.mesh_models().ok_or(Miss::Error)?;
        let now = Instant::now();
        let size = (frame.width(), frame.height());
        let dt = match self.last {
            Some((t, s)) if s == size => now.duration_since(t).as_secs_f32().clamp(1e-3, 0.5),
            Some(_) => {
                // A new resolution: the tracked landmarks mean nothing now.
                self.tracks.clear();
                self.countdown = 0;
                1.0 / 30.0
            }
            None => 1.0 / 30.0,
        };
        self.last = Some((now, size));
        if self.track(frame, models, dt).is_err() {
            self.tracks.clear();
            self.countdown = 0;
            return Err(Miss::Error);
        }
        let t = Instant::now();
        let settings = self.inner.render_settings();
        let mut written = Vec::with_capacity(self.tracks.len());
        for track in &mut self.tracks {
            written.extend(render(
                frame,
                track.filter.value(),
                &mesh_source,
                &models.topology,
                &settings,
                &mut track.colour,
                &mut self.scratch,
            ));
        }
        self.inner.metrics.swap_swap.record(t.elapsed());
        if written.is_empty() {
            return Err(Miss::NoFace);
        }
        if self.inner.config.label {
            draw_label(frame);
        }
        Ok(written)
    }
}

impl StreamProcessor for MeshProcessor {
    fn process(&mut self, frame: &mut I420Frame) {
        let Some(source) = self.inner.faces.get(&self.owner) else {
            self.reset();
            return;
        };
        let result = self.swap(frame, &source);
        let result = result.as_deref().map_err(|m| *m);
        let inner = self.inner.clone();
        inner.account(&mut self.guard, &self.owner, frame, result);
    }

    fn swapped(&self) -> bool {
        self.guard.swapped()
    }
}
