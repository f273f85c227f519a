//! The live face swap: the relay's frame stage, running the swap engine on every published
//! stream through the batching inference scheduler. Two tiers ([`Tier`]): the deep swapper
//! below, and the mesh swapper (`mesh.rs` here, [`crate::swap::mesh`]), which tracks every face
//! with the face mesh and warps the source face onto it.
//!
//! ```text
//! codec thread of stream s (StreamProcessor::process, per decoded frame), deep tier
//!   face chosen for the owner?  no ─▶ frame passes through, no model call
//!   every `detect_every`-th frame: copy of the frame ──▶ detector scheduler (mailbox s)
//!        (waited for only when no face is tracked; otherwise it runs in the background and
//!        its result is folded in on the first frame after it arrives)
//!        largest face ─▶ keypoints smoothed with the tracked ones (exponential filter)
//!   frames between: the tracked keypoints carried over
//!   align (crop warp from I420) ──▶ swapper scheduler (mailbox s) ──▶ paste-back through
//!        the face oval of the mesh (mesh scheduler, beside the swapper) ▸ label
//!   either tier, then: swapped, or failed closed (Guard) ─▶ reported, debounced (listener)
//! ```
//!
//! One [`LiveSwap`] per server, shared by every stream; it owns one scheduler per model role,
//! the registry of chosen faces ([`LiveFaces`], with admission) and the paste mask. Per-stream
//! state (the tracked faces, buffers, the fail-closed guard) lives in the processor
//! [`FrameStage::open`] returns.
//!
//! Once a face is chosen, a frame that cannot be swapped (no face, a lost track, an inference
//! error: timeout, full queue, model failure) fails closed ([`Guard`], `swap.on_failure`: the
//! last swapped frame held, or the whole frame pixelated; never the original face unless the
//! operator chose `"pass"`). Errors count in [`SwapMetrics::swap_errors`], and what went out in
//! `swapped_frames`, `held_frames`, `blurred_frames` or `unswapped_frames`: a stream never dies
//! of the swap. What each wearer's frames carry goes to the [`FaceListener`] once it has lasted
//! [`REPORT_DEBOUNCE`]; frames with a swapped face report [`StreamProcessor::swapped`], so the
//! relay marks their bitstream ([`crate::media::sei`]).
//!
//! Use, from the server's side:
//!
//! - At start-up, `LiveSwap::load(&config.models, &config.swap)` (an error is a start-up
//!   failure, never a silent fall-back) and hand `Arc::new(live.clone())` to the relay as its
//!   [`FrameStage`].
//! - Face choice: `live.detect(&frame)` and `live.source_face_of(&frame, &face)` (blocking:
//!   `spawn_blocking`; the face picker does this), then
//!   `live.faces().set(participant_id, Arc::new(face))`, which takes an admission slot for a
//!   participant's first face and answers `AdmissionError` (code `swap_capacity`) past
//!   `swap.capacity`. `LiveError::code` gives the upload's error code.
//! - `live.faces().clear(participant_id)` when the participant drops its face or leaves (frees
//!   the slot).
//! - `live.set_listener(…)` to hear what each wearer's frames carry.
//! - `/metrics`: `live.register_metrics(&mut registry)` (frame counters, stage timings, the
//!   schedulers' batches and outcomes, swap places in use).

mod guard;
mod label;
mod mesh;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use image::RgbImage;

pub use guard::{pixelate, FrameState, Guard, OnFailure};
pub use label::{draw_label, label_box};
pub use mesh::{MeshJob, MeshModels, MeshRunner};

use super::color::{self, Planes};
use super::detect::{iou, DetectParams, Detection, Detector};
use super::geometry::Point;
use super::identity::{Embedding, IdentityMap, Recognizer};
use super::mesh::render::RenderSettings;
use super::mesh::{mesh_detection, Roi, Topology};
use super::paste::{self, Mask, PasteScratch};
use super::swapper::{Contract, Swapper, INSWAPPER_128};
use super::{
    align_for_identity, align_for_swap, largest, Aligned, DeepMask, SourceFace, StageTimings,
    SwapConfig, SwapError, SwapperChoice, ARC,
};
use crate::infer::scheduler::{
    Admission, AdmissionError, AdmissionGuard, BatchRunner, ScheduleError, Scheduler,
    SchedulerMetrics, SchedulerStats, SpawnError, Ticket,
};
use crate::infer::ModelsConfig;
use crate::media::{watermark, FrameStage, I420Frame, StreamId, StreamProcessor};
use crate::metrics::{series, Counter, Histogram, HistogramFamily, Registry, Scraped};

/// Why the live stage could not start, or could not compute a source face.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("invalid [swap] configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Swap(#[from] SwapError),
    #[error("{role}: {source}")]
    Spawn {
        role: &'static str,
        source: SpawnError,
    },
    #[error("face swap is busy: {0}")]
    Schedule(#[from] ScheduleError),
    #[error("this live stage has no recognizer, so it cannot compute source faces")]
    NoRecognizer,
}

impl LiveError {
    /// Stable code for the upload API's error response.
    pub fn code(&self) -> &'static str {
        match self {
            LiveError::Swap(SwapError::NoSourceFace(_)) => "no_face",
            LiveError::Swap(SwapError::Image { .. }) => "bad_image",
            LiveError::Schedule(_) => "swap_busy",
            _ => "swap_unavailable",
        }
    }
}

type DetectFn = Box<dyn FnMut(&[I420Frame]) -> Result<Vec<Vec<Detection>>, SwapError> + Send>;
type SwapFn = Box<dyn FnMut(&[f32], &[f32], &mut [f32]) -> Result<(), SwapError> + Send>;
type EmbedFn = Box<dyn FnMut(&[f32]) -> Result<Embedding, SwapError> + Send>;

/// A detector instance for the scheduler: a frame in, its faces (frame pixels, best first) out.
pub struct DetectRunner {
    run: DetectFn,
    max_batch: usize,
}

impl DetectRunner {
    /// Any detection function, one frame per call (tests use stand-ins that fail or count).
    pub fn new(
        mut f: impl FnMut(&I420Frame) -> Result<Vec<Detection>, SwapError> + Send + 'static,
    ) -> Self {
        Self::batched(move |frames| frames.iter().map(&mut f).collect(), 1)
    }

    /// A detection function that takes up to `max_batch` frames per call.
    pub fn batched(
        f: impl FnMut(&[I420Frame]) -> Result<Vec<Vec<Detection>>, SwapError> + Send + 'static,
        max_batch: usize,
    ) -> Self {
        Self {
            run: Box::new(f),
            max_batch: max_batch.max(1),
        }
    }

    /// Loads the configured detector (checked against its contract), or the dynamic-batch
    /// variant `facerelay models prepare` wrote for it: frames of up to `swap.max_batch`
    /// streams then go through in one run.
    pub fn load(models: &ModelsConfig, swap: &SwapConfig) -> Result<Self, SwapError> {
        let rt = crate::infer::runtime(models)?;
        let path = crate::infer::prepared::runtime_path(models, models.detector_path(), "detector");
        let mut detector = Detector::load(rt, models, &path, swap.det_size)?;
        let params = DetectParams {
            score_threshold: swap.score_threshold,
            nms_threshold: swap.nms_threshold,
        };
        let max_batch = if detector.dynamic_batch() {
            swap.max_batch
        } else {
            1
        };
        Ok(Self::batched(
            move |frames| {
                let planes: Vec<Planes> = frames.iter().map(Planes::of).collect();
                detector.detect_many(&planes, &params, &mut StageTimings::default())
            },
            max_batch,
        ))
    }
}

impl DetectRunner {
    /// The mesh tier's detector from the packaged set: BlazeFace, or SCRFD where
    /// `swap.mesh_detector = "scrfd"` (small or many faces).
    pub fn load_packaged(models: &ModelsConfig, swap: &SwapConfig) -> Result<Self, SwapError> {
        let rt = crate::infer::runtime(models)?;
        let (threshold, nms) = (swap.score_threshold, swap.nms_threshold);
        match swap.mesh_detector {
            super::MeshDetector::Blazeface => {
                let mut d = super::mesh::BlazeFace::load(rt, models, &models.blazeface_path())?;
                Ok(Self::new(move |frame| {
                    d.detect(Planes::of(frame), threshold, nms)
                }))
            }
            super::MeshDetector::Scrfd => {
                let mut d = Detector::load(rt, models, &models.scrfd_path(), swap.det_size)?;
                let params = DetectParams {
                    score_threshold: threshold,
                    nms_threshold: nms,
                };
                Ok(Self::new(move |frame| {
                    d.detect(Planes::of(frame), &params, &mut StageTimings::default())
                }))
            }
        }
    }
}

impl BatchRunner for DetectRunner {
    type Input = I420Frame;
    type Output = Vec<Detection>;
    type Error = SwapError;

    /// 1 for the public file (fixed at batch 1); `swap.max_batch` for a prepared variant.
    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn run(&mut self, batch: Vec<I420Frame>) -> Result<Vec<Vec<Detection>>, SwapError> {
        (self.run)(&batch)
    }
}

/// One face for the swapper: its aligned crop (3×128×128 RGB in [0,1]) and the source.
pub struct SwapJob {
    pub crop: Vec<f32>,
    pub source: Arc<SourceFace>,
}

/// A swapper instance for the scheduler: [`SwapJob`]s in, each swapped crop out (in the job's
/// own buffer, so a stream's crop buffer goes round without allocating). A batch of several
/// jobs is one model run when the model takes it ([`SwapRunner::batched`]).
pub struct SwapRunner {
    run: SwapFn,
    max_batch: usize,
    /// Values of one crop (the swapper's contract).
    crop_len: usize,
    /// The batch's crops and latents one after the other, and the swapped crops.
    targets: Vec<f32>,
    latents: Vec<f32>,
    out: Vec<f32>,
}

impl SwapRunner {
    /// Any swap function `(target crop, source latent, output crop)` on 128 px crops, one face
    /// per call.
    pub fn new(
        f: impl FnMut(&[f32], &[f32], &mut [f32]) -> Result<(), SwapError> + Send + 'static,
    ) -> Self {
        Self::batched(f, 1, &INSWAPPER_128)
    }

    /// A swap function on `contract`'s crops that takes up to `max_batch` faces per call: their
    /// crops, latents and output crops one after the other.
    pub fn batched(
        f: impl FnMut(&[f32], &[f32], &mut [f32]) -> Result<(), SwapError> + Send + 'static,
        max_batch: usize,
        contract: &Contract,
    ) -> Self {
        Self {
            run: Box::new(f),
            max_batch: max_batch.max(1),
            crop_len: contract.crop_len(),
            targets: Vec::new(),
            latents: Vec::new(),
            out: Vec::new(),
        }
    }

    /// The swapper file at `path`, of `contract`'s family; batches of up to `max_batch` when
    /// its batch dimension is dynamic, else one face per run.
    pub fn load(
        models: &ModelsConfig,
        contract: &'static Contract,
        path: &std::path::Path,
        max_batch: usize,
    ) -> Result<Self, SwapError> {
        let rt = crate::infer::runtime(models)?;
        let mut swapper = Swapper::load(rt, models, path, contract)?;
        let max_batch = if swapper.dynamic_batch() {
            max_batch
        } else {
            1
        };
        Ok(Self::batched(
            move |targets, latents, out| swapper.swap_many(targets, latents, out),
            max_batch,
            contract,
        ))
    }
}

impl BatchRunner for SwapRunner {
    type Input = SwapJob;
    type Output = Vec<f32>;
    type Error = SwapError;

    /// 1 for the public `inswapper_128.onnx` (fixed at batch 1: several instances run side by
    /// side instead).
    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn run(&mut self, batch: Vec<SwapJob>) -> Result<Vec<Vec<f32>>, SwapError> {
        let crop = self.crop_len;
        self.targets.clear();
        self.latents.clear();
        for job in &batch {
            if job.crop.len() != crop {
                return Err(SwapError::ModelOutput("swap crop of the wrong size".into()));
            }
            self.targets.extend_from_slice(&job.crop);
            self.latents.extend_from_slice(job.source.latent()?);
        }
        self.out.resize(self.targets.len(), 0.0);
        (self.run)(&self.targets, &self.latents, &mut self.out)?;
        Ok(batch
            .into_iter()
            .zip(self.out.chunks_exact(crop))
            .map(|(mut job, swapped)| {
                job.crop.copy_from_slice(swapped);
                job.crop
            })
            .collect())
    }
}

/// A recognizer instance: an aligned 112 px ArcFace crop in, the unit embedding out. Only
/// source faces (uploads) use it, never the per-frame path.
pub struct RecognizeRunner {
    run: EmbedFn,
}

impl RecognizeRunner {
    pub fn new(f: impl FnMut(&[f32]) -> Result<Embedding, SwapError> + Send + 'static) -> Self {
        Self { run: Box::new(f) }
    }

    pub fn load(models: &ModelsConfig) -> Result<Self, SwapError> {
        let rt = crate::infer::runtime(models)?;
        let mut recognizer = Recognizer::load(rt, models, &models.recognizer_path())?;
        Ok(Self::new(move |crop| recognizer.embed(crop)))
    }
}

impl BatchRunner for RecognizeRunner {
    type Input = Vec<f32>;
    type Output = Embedding;
    type Error = SwapError;

    fn max_batch(&self) -> usize {
        1
    }

    fn run(&mut self, batch: Vec<Vec<f32>>) -> Result<Vec<Embedding>, SwapError> {
        batch.iter().map(|c| (self.run)(c)).collect()
    }
}

/// The face each participant chose, read by its streams' processors every frame and set or
/// cleared from the signalling/upload side at any time (a face may change mid-call). Holding
/// a face takes an admission slot, so the swap never serves more streams than `swap.capacity`.
pub struct LiveFaces {
    faces: RwLock<HashMap<String, FaceEntry>>,
    admission: Admission,
}

struct FaceEntry {
    face: Arc<SourceFace>,
    _slot: AdmissionGuard,
}

impl LiveFaces {
    pub fn new(admission: Admission) -> Self {
        Self {
            faces: RwLock::new(HashMap::new()),
            admission,
        }
    }

    /// The face `participant` chose, if any. A read lock and an `Arc` clone: cheap per frame.
    pub fn get(&self, participant: &str) -> Option<Arc<SourceFace>> {
        let faces = self.faces.read().unwrap_or_else(|e| e.into_inner());
        faces.get(participant).map(|e| e.face.clone())
    }

    /// Sets or replaces `participant`'s face. A participant without a face yet needs an
    /// admission slot: past capacity it is refused and its streams stay unswapped.
    pub fn set(&self, participant: &str, face: Arc<SourceFace>) -> Result<(), AdmissionError> {
        let mut faces = self.faces.write().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = faces.get_mut(participant) {
            entry.face = face;
            return Ok(());
        }
        let slot = self.admission.try_admit()?;
        faces.insert(participant.to_owned(), FaceEntry { face, _slot: slot });
        Ok(())
    }

    /// Clears `participant`'s face (back to pass-through) and frees its slot. The signalling
    /// layer must call it when a participant leaves. Returns whether there was one.
    pub fn clear(&self, participant: &str) -> bool {
        let mut faces = self.faces.write().unwrap_or_else(|e| e.into_inner());
        faces.remove(participant).is_some()
    }

    pub fn admission(&self) -> &Admission {
        &self.admission
    }
}

/// One tracked face of a stream: the smoothed keypoints and box of its last detections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Track {
    pub bbox: [f32; 4],
    pub kps: [Point; 5],
}

/// Below this overlap with the tracked box a detection is another face (or a jump) and the
/// filter starts over instead of dragging the old position along.
const RESET_IOU: f32 = 1.0 / 3.0;

/// The keypoint filter: exponential smoothing across detections,
/// `s_k = α·d_k + (1 − α)·s_{k−1}` per coordinate (box and keypoints), α = `swap.smoothing`.
/// For detector noise of variance σ² around a still face the output variance is
/// σ²·α/(2 − α) (a third of it at α = 0.5); the price is lag on a moving face: a step settles
/// to within (1 − α)^k after k detections. A detection overlapping the track by less than
/// [`RESET_IOU`] restarts the track at that detection.
pub fn smooth(previous: Option<&Track>, detection: &Detection, alpha: f32) -> Track {
    let fresh = Track {
        bbox: detection.bbox,
        kps: detection.kps,
    };
    let Some(prev) = previous else {
        return fresh;
    };
    if iou(&prev.bbox, &detection.bbox) < RESET_IOU {
        return fresh;
    }
    let mix = |old: f32, new: f32| alpha * new + (1.0 - alpha) * old;
    Track {
        bbox: std::array::from_fn(|i| mix(prev.bbox[i], detection.bbox[i])),
        kps: std::array::from_fn(|k| [0, 1].map(|j| mix(prev.kps[k][j], detection.kps[k][j]))),
    }
}

/// The schedulers a [`LiveSwap`] runs on: the per-frame pair, plus the recognizer and the
/// swapper's identity map for source faces (absent in tests that only swap).
pub struct LiveModels {
    /// The swapper's family: its crop, template and pixel scale.
    pub contract: &'static Contract,
    pub detector: Arc<Scheduler<DetectRunner>>,
    pub swapper: Arc<Scheduler<SwapRunner>>,
    pub recognizer: Option<(Arc<Scheduler<RecognizeRunner>>, Arc<IdentityMap>)>,
    /// The face mesh and its topology, for the oval and mouth masks (`swap.deep_mask`).
    pub mesh: Option<(Arc<Scheduler<MeshRunner>>, Arc<Topology>)>,
}

impl LiveModels {
    /// Starts the schedulers with `swap.*_workers` instances of each configured model; any
    /// model that does not load fails here, loudly.
    pub fn load(models: &ModelsConfig, swap: &SwapConfig) -> Result<Self, LiveError> {
        // Runtime first: a missing or wrong ONNX Runtime library is the one error to name
        // before any model.
        crate::infer::runtime(models).map_err(SwapError::from)?;
        let spawn_err = |role| move |source| LiveError::Spawn { role, source };
        let (m, s) = (models.clone(), swap.clone());
        let detector = Scheduler::spawn(
            "detector",
            swap.scheduler_settings(swap.detector_workers),
            move |_| DetectRunner::load(&m, &s),
        )
        .map_err(spawn_err("detector"))?;
        let contract = swap.swapper.deep(models).unwrap_or(&INSWAPPER_128);
        let (m, max_batch) = (models.clone(), swap.max_batch);
        let path = contract.runtime_path(models);
        let swapper = Scheduler::spawn(
            "swapper",
            swap.scheduler_settings(swap.swapper_workers),
            move |_| SwapRunner::load(&m, contract, &path, max_batch),
        )
        .map_err(spawn_err("swapper"))?;
        let m = models.clone();
        let recognizer = Scheduler::spawn("recognizer", swap.scheduler_settings(1), move |_| {
            RecognizeRunner::load(&m)
        })
        .map_err(spawn_err("recognizer"))?;
        let rt = crate::infer::runtime(models).map_err(SwapError::from)?;
        let identity = IdentityMap::load(rt, models, contract, &contract.path(models))?;
        let mesh = match swap.deep_mask {
            DeepMask::Oval => Some(spawn_mesh(models, swap)?),
            DeepMask::Square => None,
        };
        Ok(Self {
            contract,
            detector: Arc::new(detector),
            swapper: Arc::new(swapper),
            recognizer: Some((Arc::new(recognizer), Arc::new(identity))),
            mesh,
        })
    }
}

impl MeshModels {
    /// Starts the mesh tier's schedulers: the configured detector (`swap.mesh_detector`) and
    /// `swap.mesh_workers` face mesh instances, and reads the mesh topology. Any file that is
    /// missing or wrong fails here, loudly.
    pub fn load(models: &ModelsConfig, swap: &SwapConfig) -> Result<Self, LiveError> {
        crate::infer::runtime(models).map_err(SwapError::from)?;
        let (mesh, topology) = spawn_mesh(models, swap)?;
        let (m, s) = (models.clone(), swap.clone());
        let detector = Scheduler::spawn(
            "detector",
            swap.scheduler_settings(swap.detector_workers),
            move |_| DetectRunner::load_packaged(&m, &s),
        )
        .map_err(|source| LiveError::Spawn {
            role: "detector",
            source,
        })?;
        Ok(Self {
            detector: Arc::new(detector),
            mesh,
            topology,
        })
    }
}

/// The face mesh's scheduler (`swap.mesh_workers` instances) and the mesh topology, shared by
/// the mesh tier and the deep tier's oval mask.
fn spawn_mesh(
    models: &ModelsConfig,
    swap: &SwapConfig,
) -> Result<(Arc<Scheduler<MeshRunner>>, Arc<Topology>), LiveError> {
    let topology = Topology::load(&models.topology_path())?;
    let m = models.clone();
    let mesh = Scheduler::spawn(
        "mesh",
        swap.scheduler_settings(swap.mesh_workers),
        move |_| MeshRunner::load(&m),
    )
    .map_err(|source| LiveError::Spawn {
        role: "face mesh",
        source,
    })?;
    Ok((Arc::new(mesh), Arc::new(topology)))
}

/// The models behind a live stage: the deep swapper's or the mesh swapper's.
pub enum Tier {
    Deep(LiveModels),
    Mesh(MeshModels),
}

/// Longest a source-face upload waits for each model: uploads are not real time, and on a
/// loaded server they queue behind the streams.
const SOURCE_TIMEOUT: Duration = Duration::from_secs(10);

/// Mailbox keys for source-face computations, far above the relay's stream ids, so that two
/// uploads never supersede each other or a stream's frame.
const SOURCE_STREAM_BASE: u64 = 1 << 62;

/// Told what a wearer's frames carry, whenever that changes (after [`REPORT_DEBOUNCE`]):
/// `(participant, state, reason)`, the reason (`"no_face"` or `"busy"`) when the face could not
/// be swapped. Called on a codec thread: it must not block.
pub type FaceListener = Arc<dyn Fn(&str, FrameState, Option<&'static str>) + Send + Sync>;

/// A stream's new frame state is reported once it has lasted this long (one odd frame does not
/// flip the others' badge back and forth).
pub const REPORT_DEBOUNCE: Duration = Duration::from_millis(300);

/// The per-stream debounce of [`FaceListener`] reports.
#[derive(Debug, Default)]
struct Reporter {
    sent: Option<FrameState>,
    pending: Option<(FrameState, Instant)>,
}

impl Reporter {
    /// The state to report now, if any.
    fn observe(&mut self, state: FrameState) -> Option<FrameState> {
        if self.sent == Some(state) {
            self.pending = None;
            return None;
        }
        match self.pending {
            Some((p, since)) if p == state => {
                if since.elapsed() >= REPORT_DEBOUNCE {
                    self.sent = Some(state);
                    self.pending = None;
                    return Some(state);
                }
            }
            _ => self.pending = Some((state, Instant::now())),
        }
        None
    }

    fn reset(&mut self) {
        *self = Self::default();
    }
}

/// What the live face swap counts, over every stream.
#[derive(Debug)]
pub struct SwapMetrics {
    /// Frames whose face the stage swapped.
    pub swapped_frames: Counter,
    /// Frames of a stream with a chosen face whose inference failed (timeout, full queue, model
    /// error); what went out instead is counted below (`swap.on_failure`).
    pub swap_errors: Counter,
    /// Frames of a stream with a chosen face that went out as the last swapped frame again.
    pub held_frames: Counter,
    /// Frames of a stream with a chosen face that went out pixelated as a whole.
    pub blurred_frames: Counter,
    /// Frames of a stream with a chosen face that went out unswapped (`on_failure = "pass"`).
    pub unswapped_frames: Counter,
    /// Mesh-tier frames on which a track's box showed something else than on the frame before
    /// and the detector was asked whether a face is still there.
    pub track_checks: Counter,
    /// Per frame that ran them: detection (the time a frame waited for one, queueing
    /// included: the first frame of a track, or a detector behind its cadence; other
    /// detections run in the background), crop warp, swapper (queueing included), paste-back
    /// and label.
    stages: HistogramFamily,
    pub swap_detect: Histogram,
    pub swap_align: Histogram,
    pub swap_swap: Histogram,
    pub swap_paste: Histogram,
}

impl Default for SwapMetrics {
    fn default() -> Self {
        let stages = HistogramFamily::default();
        Self {
            swapped_frames: Counter::default(),
            swap_errors: Counter::default(),
            held_frames: Counter::default(),
            blurred_frames: Counter::default(),
            unswapped_frames: Counter::default(),
            track_checks: Counter::default(),
            swap_detect: series(&stages, "stage", "detect"),
            swap_align: series(&stages, "stage", "align"),
            swap_swap: series(&stages, "stage", "swap"),
            swap_paste: series(&stages, "stage", "paste"),
            stages,
        }
    }
}

struct Inner {
    listener: RwLock<Option<FaceListener>>,
    tier: Tier,
    faces: LiveFaces,
    config: SwapConfig,
    mask: Mask,
    metrics: Arc<SwapMetrics>,
    next_source: AtomicU64,
}

/// The live face-swap frame stage. Cheap to clone (an `Arc`); share one per server.
#[derive(Clone)]
pub struct LiveSwap {
    inner: Arc<Inner>,
}

impl LiveSwap {
    /// Loads every model with the configured settings and starts the workers. Start-up
    /// errors (no ONNX Runtime, missing model, wrong contract, provider failure) are returned,
    /// never papered over.
    pub fn load(models: &ModelsConfig, swap: &SwapConfig) -> Result<Self, LiveError> {
        swap.validate().map_err(LiveError::Config)?;
        let tier = match swap.swapper {
            SwapperChoice::Deep(_) => Tier::Deep(LiveModels::load(models, swap)?),
            SwapperChoice::Mesh => Tier::Mesh(MeshModels::load(models, swap)?),
            SwapperChoice::Auto => match SwapperChoice::auto(models) {
                Some(SwapperChoice::Mesh) => Tier::Mesh(MeshModels::load(models, swap)?),
                _ => Tier::Deep(LiveModels::load(models, swap)?),
            },
        };
        Ok(Self::with_tier(tier, swap))
    }

    /// The deep stage over schedulers built elsewhere (tests, benches with stand-in runners).
    pub fn with_models(models: LiveModels, swap: &SwapConfig) -> Self {
        Self::with_tier(Tier::Deep(models), swap)
    }

    /// The stage over either tier's schedulers.
    pub fn with_tier(tier: Tier, swap: &SwapConfig) -> Self {
        // The deep swapper's square mask (the mesh tier draws its own).
        let contract = match &tier {
            Tier::Deep(m) => m.contract,
            Tier::Mesh(_) => &INSWAPPER_128,
        };
        let mask = super::crop_mask(contract, swap);
        Self {
            inner: Arc::new(Inner {
                listener: RwLock::new(None),
                tier,
                faces: LiveFaces::new(Admission::new(swap.capacity)),
                config: swap.clone(),
                mask,
                metrics: Arc::default(),
                next_source: AtomicU64::new(0),
            }),
        }
    }

    /// Where the stage reports what each wearer's frames carry (one listener; a later call
    /// replaces it).
    pub fn set_listener(&self, listener: FaceListener) {
        *self
            .inner
            .listener
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(listener);
    }

    /// The registry of chosen faces (set, clear, admission).
    pub fn faces(&self) -> &LiveFaces {
        &self.inner.faces
    }

    /// The deep tier's schedulers, when the deep swapper runs.
    pub fn deep(&self) -> Option<&LiveModels> {
        match &self.inner.tier {
            Tier::Deep(m) => Some(m),
            Tier::Mesh(_) => None,
        }
    }

    /// The mesh tier's schedulers, when the mesh swapper runs.
    pub fn mesh(&self) -> Option<&MeshModels> {
        self.inner.mesh_models()
    }

    /// The counters of the detector's scheduler and of the per-frame model's (the deep
    /// swapper's, or the face mesh's).
    pub fn stage_stats(&self) -> (SchedulerStats, SchedulerStats) {
        match &self.inner.tier {
            Tier::Deep(m) => (m.detector.stats(), m.swapper.stats()),
            Tier::Mesh(m) => (m.detector.stats(), m.mesh.stats()),
        }
    }

    /// Which swapper runs: `"mesh"` or the deep family's name, e.g. `"inswapper_128"` (logs,
    /// `/healthz`, the web page).
    pub fn swapper_name(&self) -> &'static str {
        match &self.inner.tier {
            Tier::Deep(m) => m.contract.name,
            Tier::Mesh(_) => "mesh",
        }
    }

    fn source_key(&self) -> StreamId {
        StreamId(
            SOURCE_STREAM_BASE
                + self.inner.next_source.fetch_add(1, Ordering::Relaxed) % SOURCE_STREAM_BASE,
        )
    }

    /// The faces of a photo (as I420), through the running tier's detector. Blocks: call it
    /// off tokio's workers.
    pub fn detect(&self, frame: &I420Frame) -> Result<Vec<Detection>, LiveError> {
        let detector = match &self.inner.tier {
            Tier::Deep(m) => &m.detector,
            Tier::Mesh(m) => &m.detector,
        };
        Ok(detector
            .submit(self.source_key(), frame.clone())?
            .wait(SOURCE_TIMEOUT)?)
    }

    /// The source face of one detected face of a photo, for the running swapper: the deep
    /// swapper's identity, or the mesh swapper's face region and landmarks. Blocks.
    pub fn source_face_of(
        &self,
        frame: &I420Frame,
        face: &Detection,
    ) -> Result<SourceFace, LiveError> {
        let key = self.source_key();
        match &self.inner.tier {
            Tier::Deep(models) => {
                let (recognizer, identity) =
                    models.recognizer.as_ref().ok_or(LiveError::NoRecognizer)?;
                let mut crop = vec![0.0; 3 * ARC * ARC];
                align_for_identity(frame, &face.kps, &mut crop)?;
                let embedding = recognizer.submit(key, crop)?.wait(SOURCE_TIMEOUT)?;
                Ok(SourceFace::new(embedding, *face, identity)?)
            }
            Tier::Mesh(models) => {
                let points =
                    super::mesh::landmarks_of(face, self.inner.config.mesh_presence, |roi| {
                        models
                            .mesh
                            .submit(key, vec![MeshJob::of(frame, roi)])?
                            .wait(SOURCE_TIMEOUT)?
                            .pop()
                            .ok_or_else(|| {
                                LiveError::from(SwapError::ModelOutput("no mesh".into()))
                            })
                    })?
                    .ok_or(SwapError::NoSourceFace(None))?;
                let source = super::mesh::MeshSource::new(frame, &points)?;
                Ok(SourceFace::of_mesh(
                    source,
                    mesh_detection(&points, face.score),
                ))
            }
        }
    }

    /// The source face of the largest face in an uploaded photo, through the same schedulers
    /// as the streams. Blocks for up to a few seconds: call it off tokio's workers
    /// (`spawn_blocking`).
    pub fn source_face(&self, photo: &RgbImage) -> Result<SourceFace, LiveError> {
        if let Tier::Deep(LiveModels {
            recognizer: None, ..
        }) = &self.inner.tier
        {
            return Err(LiveError::NoRecognizer);
        }
        let frame = color::rgb_to_i420(photo).map_err(SwapError::from)?;
        let faces = self.detect(&frame)?;
        let face = largest(&faces).ok_or(SwapError::NoSourceFace(None))?;
        self.source_face_of(&frame, &face)
    }

    /// [`Self::source_face`] of an uploaded file's bytes (JPEG, PNG or WebP), within
    /// `swap.max_image_bytes` and `swap.max_image_pixels`.
    pub fn source_face_from_bytes(&self, bytes: &[u8]) -> Result<SourceFace, LiveError> {
        let c = &self.inner.config;
        if bytes.len() as u64 > c.max_image_bytes {
            return Err(SwapError::Image {
                path: "upload".into(),
                message: format!(
                    "{} bytes is more than swap.max_image_bytes ({})",
                    bytes.len(),
                    c.max_image_bytes
                ),
            }
            .into());
        }
        let photo = super::decode_image(bytes, c.max_image_pixels, "upload")?;
        self.source_face(&photo)
    }

    /// What the stage counts, for tests and benches.
    pub fn metrics(&self) -> &Arc<SwapMetrics> {
        &self.inner.metrics
    }

    /// The inference schedulers of the tier, by role (the `model` label of their metrics).
    pub fn schedulers(&self) -> Vec<(&'static str, &Arc<SchedulerMetrics>)> {
        match &self.inner.tier {
            Tier::Deep(m) => {
                let mut list = vec![
                    ("detector", m.detector.metrics()),
                    ("swapper", m.swapper.metrics()),
                ];
                if let Some((r, _)) = &m.recognizer {
                    list.push(("recognizer", r.metrics()));
                }
                list
            }
            Tier::Mesh(m) => vec![
                ("detector", m.detector.metrics()),
                ("mesh", m.mesh.metrics()),
            ],
        }
    }

    /// Registers the stage's frame counters, its stage timings, its schedulers' metrics and the
    /// face-swap places in use against the capacity.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.inner.metrics;
        for (name, help, counter) in [
            ("facerelay_swapped_frames", "Frames whose face the live stage swapped", &m.swapped_frames),
            (
                "facerelay_swap_errors",
                "Frames of a stream with a chosen face whose inference failed (timeout, busy, model error)",
                &m.swap_errors,
            ),
            (
                "facerelay_swap_track_checks",
                "Mesh-tier frames on which a tracked face's box changed and the detector checked it",
                &m.track_checks,
            ),
            (
                "facerelay_held_frames",
                "Frames that could not be swapped and went out as the last swapped frame (swap.on_failure)",
                &m.held_frames,
            ),
            (
                "facerelay_blurred_frames",
                "Frames that could not be swapped and went out pixelated as a whole (swap.on_failure)",
                &m.blurred_frames,
            ),
            (
                "facerelay_unswapped_frames",
                "Frames that could not be swapped and went out as they were (swap.on_failure = pass)",
                &m.unswapped_frames,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "facerelay_swap_stage_seconds",
            "Time per frame in each stage of the live face swap",
            m.stages.clone(),
        );
        SchedulerMetrics::register_all(&self.schedulers(), registry);
        let admission = self.inner.faces.admission().clone();
        let capacity = admission.capacity() as u64;
        let mut scraped = Scraped::default();
        scraped
            .gauge(
                "facerelay_swap_slots_in_use",
                "Face-swap places held by participants with a chosen face.",
                move || admission.in_use() as u64,
            )
            .gauge(
                "facerelay_swap_slots_capacity",
                "Face-swap places this server offers (swap.capacity).",
                move || capacity,
            );
        scraped.register(registry);
    }
}

impl Inner {
    /// After a frame of a stream with a chosen face: on a miss, makes the frame safe as
    /// `swap.on_failure` says; counts what went out.
    fn account(
        &self,
        stream: &mut StreamGuard,
        owner: &str,
        frame: &mut I420Frame,
        result: Result<&[[u32; 4]], Miss>,
    ) -> FrameState {
        let m = &self.metrics;
        let (state, reason) = match result {
            Ok(boxes) => {
                if self.config.watermark {
                    watermark::embed(frame, boxes, watermark::AMPLITUDE);
                }
                (stream.guard.swapped(frame), None)
            }
            Err(miss) => {
                if miss == Miss::Error {
                    m.swap_errors.inc();
                }
                let reason = match miss {
                    Miss::NoFace => "no_face",
                    Miss::Error => "busy",
                };
                (stream.guard.failed(frame), Some(reason))
            }
        };
        stream.last = Some(state);
        if let Some(report) = stream.reporter.observe(state) {
            let listener = self
                .listener
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(listener) = listener {
                listener(owner, report, reason);
            }
        }
        match state {
            FrameState::Swapped => &m.swapped_frames,
            FrameState::Held => &m.held_frames,
            FrameState::Blurred => &m.blurred_frames,
            FrameState::Unswapped => &m.unswapped_frames,
        }
        .inc();
        state
    }

    fn guard(&self) -> StreamGuard {
        StreamGuard {
            guard: Guard::new(
                self.config.on_failure,
                Duration::from_millis(self.config.hold_ms),
                self.config.label,
            ),
            reporter: Reporter::default(),
            last: None,
        }
    }

    fn models_timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    fn mesh_models(&self) -> Option<&MeshModels> {
        match &self.tier {
            Tier::Mesh(m) => Some(m),
            Tier::Deep(_) => None,
        }
    }

    fn deep_models(&self) -> Option<&LiveModels> {
        match &self.tier {
            Tier::Deep(m) => Some(m),
            Tier::Mesh(_) => None,
        }
    }

    fn render_settings(&self) -> RenderSettings {
        let c = &self.config;
        RenderSettings {
            feather: c.mesh_feather,
            colour_smoothing: c.colour_smoothing,
            colour_match: c.colour_match,
            keep_eyes_mouth: c.keep_eyes_mouth,
        }
    }
}

impl FrameStage for LiveSwap {
    fn open(&self, stream: StreamId, owner: &str) -> Box<dyn StreamProcessor> {
        let Some(deep) = self.inner.deep_models() else {
            return Box::new(mesh::MeshProcessor::new(stream, owner, self.inner.clone()));
        };
        Box::new(LiveProcessor {
            contract: deep.contract,
            detector: deep.detector.clone(),
            swapper: deep.swapper.clone(),
            mesh: deep.mesh.clone(),
            target: Vec::new(),
            guard: self.inner.guard(),
            stream,
            owner: owner.to_owned(),
            inner: self.inner.clone(),
            track: None,
            pending: None,
            countdown: 0,
            crop: Vec::new(),
            scratch: PasteScratch::default(),
        })
    }
}

/// A stream's tracked face and the frame size its coordinates belong to.
#[derive(Debug, Clone, Copy)]
struct TrackedFace {
    track: Track,
    frame_size: (u32, u32),
}

/// A detection submitted for a frame of the given size, not yet folded into the track.
struct PendingDetection {
    ticket: Ticket<DetectRunner>,
    submitted: Instant,
    frame_size: (u32, u32),
}

/// The per-stream half of the stage, on the stream's codec thread.
struct LiveProcessor {
    contract: &'static Contract,
    detector: Arc<Scheduler<DetectRunner>>,
    swapper: Arc<Scheduler<SwapRunner>>,
    mesh: Option<(Arc<Scheduler<MeshRunner>>, Arc<Topology>)>,
    /// The target crop before the swap (for colour matching).
    target: Vec<f32>,
    guard: StreamGuard,
    stream: StreamId,
    owner: String,
    inner: Arc<Inner>,
    track: Option<TrackedFace>,
    /// A detection running in the background while the track is used.
    pending: Option<PendingDetection>,
    /// Frames until the next detection; 0 = detect on this frame.
    countdown: u32,
    /// The stream's crop buffer; travels to the swapper and back.
    crop: Vec<f32>,
    scratch: PasteScratch,
}

impl LiveProcessor {
    /// Runs detection when due and updates the track. `Err` = inference failed and this frame
    /// has no trustworthy face position (the caller fails closed and counts it); `Ok`
    /// with no track = no face in view.
    ///
    /// With a face tracked, a due detection runs in the background: this frame and the next
    /// ones use the track, and the result is folded in on the first frame after it arrives, so
    /// detection adds no latency to the stream. Only a stream without a track (its first
    /// frames, a lost face, after an error) waits for its detection. If the previous detection
    /// is still running when the next is due, the frame waits for it, so the cadence holds.
    fn update_track(&mut self, frame: &I420Frame) -> Result<(), ScheduleError> {
        let size = (frame.width(), frame.height());
        let stale = |s: (u32, u32)| s != size;
        if self.track.is_some_and(|t| stale(t.frame_size))
            || self.pending.as_ref().is_some_and(|p| stale(p.frame_size))
        {
            // The publisher changed resolution: the tracked keypoints mean nothing now.
            self.track = None;
            self.pending = None;
            self.countdown = 0;
        }
        self.collect(false);
        if self.countdown > 0 {
            self.countdown -= 1;
            return Ok(());
        }
        if self.pending.is_some() {
            self.collect(true);
        }
        let every = self.inner.config.detect_every.saturating_sub(1);
        let detector = &self.detector;
        if self.track.is_some() {
            let ticket = detector
                .submit(self.stream, frame.clone())
                .inspect_err(|_| {
                    self.track = None;
                })?;
            self.pending = Some(PendingDetection {
                ticket,
                submitted: Instant::now(),
                frame_size: size,
            });
            self.countdown = every;
            return Ok(());
        }
        let t = Instant::now();
        let found = detector.infer(self.stream, frame.clone());
        self.inner.metrics.swap_detect.record(t.elapsed());
        // A failed detection retries on the next frame; a successful one (face or not) waits
        // its turn, so a stream without a face costs one detection every `detect_every` frames.
        let faces = found?;
        self.countdown = every;
        self.apply(&faces, size);
        Ok(())
    }

    /// Folds in the background detection if it has finished (or, with `block`, waits for it
    /// up to the inference timeout). A failed one drops the track: the next frame detects
    /// afresh and waits for it.
    fn collect(&mut self, block: bool) {
        let timeout = self.detector.settings().timeout;
        let Some(p) = self.pending.as_mut() else {
            return;
        };
        let size = p.frame_size;
        let reply = if block {
            let t = Instant::now();
            let left = timeout.saturating_sub(p.submitted.elapsed());
            let Some(p) = self.pending.take() else {
                return;
            };
            let reply = p.ticket.wait(left);
            self.inner.metrics.swap_detect.record(t.elapsed());
            reply
        } else {
            let reply = match p.ticket.try_take() {
                Some(reply) => reply,
                None if p.submitted.elapsed() < timeout => return,
                // Dropping the ticket (below) withdraws the request if no worker has taken it.
                None => Err(ScheduleError::Timeout),
            };
            self.pending = None;
            reply
        };
        match reply {
            Ok(faces) => self.apply(&faces, size),
            Err(_) => {
                self.track = None;
                self.countdown = 0;
            }
        }
    }

    /// A detection's largest face becomes the track, smoothed with the one before.
    fn apply(&mut self, faces: &[Detection], size: (u32, u32)) {
        self.track = largest(faces).map(|face| TrackedFace {
            track: smooth(
                self.track.as_ref().map(|t| &t.track),
                &face,
                self.inner.config.smoothing,
            ),
            frame_size: size,
        });
    }
}

/// A stream's fail-closed state and the debounce of its reports.
pub(crate) struct StreamGuard {
    guard: Guard,
    reporter: Reporter,
    /// What the last frame went out as (`None`: no face chosen).
    last: Option<FrameState>,
}

impl StreamGuard {
    /// The face was cleared.
    fn reset(&mut self) {
        self.guard.reset();
        self.reporter.reset();
        self.last = None;
    }

    /// The last frame carries a swapped face (swapped now, or a swapped frame held).
    pub(crate) fn swapped(&self) -> bool {
        matches!(self.last, Some(FrameState::Swapped | FrameState::Held))
    }
}

/// Why a frame of a stream with a chosen face was not swapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// No face in view (or it misses the frame).
    NoFace,
    /// Inference failed: timeout, full queue, model error.
    Error,
}

impl LiveProcessor {
    /// Swaps the tracked face of `frame`; returns the frame box written.
    fn swap(&mut self, frame: &mut I420Frame, source: Arc<SourceFace>) -> Result<[u32; 4], Miss> {
        let m = self.inner.metrics.clone();
        self.update_track(frame).map_err(|_| Miss::Error)?;
        let Some(TrackedFace { track, .. }) = self.track else {
            return Err(Miss::NoFace);
        };
        let t0 = Instant::now();
        self.crop.resize(self.contract.crop_len(), 0.0);
        let Aligned { to_crop, paste_box } =
            align_for_swap(frame, &track.kps, self.contract, &mut self.crop).ok_or(Miss::NoFace)?;
        // The face mesh for the oval mask runs beside the swapper (another scheduler).
        let mesh_ticket = self.mesh.as_ref().and_then(|(mesh, _)| {
            let roi = Roi::from_detection(&Detection {
                score: 1.0,
                bbox: track.bbox,
                kps: track.kps,
            });
            mesh.submit(self.stream, vec![MeshJob::of(frame, &roi)])
                .ok()
        });
        if self.inner.config.deep_colour_match {
            self.target.clone_from(&self.crop);
        }
        let t1 = Instant::now();
        m.swap_align.record(t1 - t0);
        let job = SwapJob {
            crop: std::mem::take(&mut self.crop),
            source,
        };
        let swapped = self.swapper.infer(self.stream, job);
        let t2 = Instant::now();
        m.swap_swap.record(t2 - t1);
        // On error the buffer went with the job; `resize` above makes a new one next frame.
        let swapped = swapped.map_err(|_| Miss::Error)?;
        let timeout = self.inner.models_timeout();
        let oval = mesh_ticket.and_then(|t| {
            let mesh = t.wait(timeout).ok()?.pop()?;
            let (_, topology) = self.mesh.as_ref()?;
            (mesh.presence >= self.inner.config.mesh_presence).then(|| {
                super::mesh::crop_mask(
                    &self.inner.mask,
                    &to_crop,
                    &mesh.points,
                    topology,
                    self.inner.config.mesh_feather,
                    self.inner.config.mouth_mask,
                )
            })
        });
        let mask = oval.as_ref().unwrap_or(&self.inner.mask);
        paste::crop_to_yuv(&swapped, self.contract.size, &mut self.scratch);
        if self.inner.config.deep_colour_match {
            paste::match_colour(&mut self.scratch, &self.target, mask);
        }
        paste::paste_back(frame, &to_crop, mask, &self.scratch, paste_box);
        if self.inner.config.label {
            draw_label(frame);
        }
        m.swap_paste.record(t2.elapsed());
        self.crop = swapped;
        Ok(paste_box)
    }
}

impl StreamProcessor for LiveProcessor {
    fn process(&mut self, frame: &mut I420Frame) {
        let Some(source) = self.inner.faces.get(&self.owner) else {
            // No face chosen: no model call; the next chosen face starts from a fresh detection.
            self.track = None;
            self.pending = None;
            self.countdown = 0;
            self.guard.reset();
            return;
        };
        let result = self.swap(frame, source);
        let result = result.as_ref().map(std::slice::from_ref).map_err(|m| *m);
        let inner = self.inner.clone();
        inner.account(&mut self.guard, &self.owner, frame, result);
    }

    fn swapped(&self) -> bool {
        self.guard.swapped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, y: f32) -> Detection {
        Detection {
            score: 0.9,
            bbox: [x - 50.0, y - 50.0, x + 50.0, y + 50.0],
            kps: [
                [x - 20.0, y - 10.0],
                [x + 20.0, y - 10.0],
                [x, y],
                [x - 15.0, y + 20.0],
                [x + 15.0, y + 20.0],
            ],
        }
    }

    /// Deterministic noise in [-1, 1] (no rand dependency).
    fn noise(i: u32) -> f32 {
        let h = i.wrapping_mul(2_654_435_761).rotate_left(13) ^ 0x9e37_79b9;
        (h % 2001) as f32 / 1000.0 - 1.0
    }

    #[test]
    fn smoothing_shrinks_keypoint_jitter_around_a_still_face() {
        let truth = [320.0f32, 240.0];
        let (mut raw_sq, mut smooth_sq, mut n) = (0.0f32, 0.0f32, 0.0f32);
        let mut track = None;
        for i in 0..400u32 {
            let d = det(
                truth[0] + 4.0 * noise(2 * i),
                truth[1] + 4.0 * noise(2 * i + 1),
            );
            track = Some(smooth(track.as_ref(), &d, 0.5));
            if i >= 20 {
                let s = track.unwrap().kps[2];
                raw_sq += (d.kps[2][0] - truth[0]).powi(2) + (d.kps[2][1] - truth[1]).powi(2);
                smooth_sq += (s[0] - truth[0]).powi(2) + (s[1] - truth[1]).powi(2);
                n += 1.0;
            }
        }
        let (raw, smoothed) = ((raw_sq / n).sqrt(), (smooth_sq / n).sqrt());
        // Theory for α = 0.5: the variance drops to a third, the RMS to 0.58 of the raw one.
        assert!(smoothed < 0.7 * raw, "raw {raw} smoothed {smoothed}");
        assert!(smoothed > 0.3 * raw, "raw {raw} smoothed {smoothed}");
    }

    #[test]
    fn smoothing_follows_a_step_and_restarts_on_another_face() {
        let a = smooth(None, &det(100.0, 100.0), 0.5);
        assert_eq!(a.kps[2], [100.0, 100.0]);
        // A small move: halfway there.
        let b = smooth(Some(&a), &det(110.0, 100.0), 0.5);
        assert_eq!(b.kps[2], [105.0, 100.0]);
        // α = 1: no smoothing at all.
        assert_eq!(
            smooth(Some(&a), &det(110.0, 100.0), 1.0).kps[2],
            [110.0, 100.0]
        );
        // A face elsewhere (no overlap): the track starts over there.
        let c = smooth(Some(&b), &det(400.0, 300.0), 0.5);
        assert_eq!(c.kps[2], [400.0, 300.0]);
    }

    #[test]
    fn faces_need_admission_and_free_it_when_cleared() {
        let faces = LiveFaces::new(Admission::new(1));
        let face = Arc::new(SourceFace {
            identity: Some(crate::swap::Identity {
                embedding: Embedding::from_raw(&[1.0; 512]).unwrap(),
                latent: vec![0.0; 512],
            }),
            mesh: None,
            detection: det(0.0, 0.0),
        });
        assert!(faces.get("p1").is_none());
        faces.set("p1", face.clone()).unwrap();
        // Replacing one's own face needs no new slot.
        faces.set("p1", face.clone()).unwrap();
        assert_eq!(
            faces.set("p2", face.clone()).unwrap_err().code(),
            "swap_capacity"
        );
        assert!(faces.clear("p1"));
        assert!(!faces.clear("p1"));
        faces.set("p2", face).unwrap();
        assert!(faces.get("p2").is_some() && faces.get("p1").is_none());
        assert_eq!(faces.admission().in_use(), 1);
    }
}
