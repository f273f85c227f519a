//! The face pipeline (detect ▸ select ▸ align ▸ swap ▸ paste) as pure functions over frames and
//! tensors, plus typed wrappers per model and the [`Engine`] that holds them.
//!
//! Per frame, on the CPU side, nothing touches more than the model inputs need:
//!
//! ```text
//! I420 frame ──letterbox straight from Y/U/V──▶ detector tensor (3×640×640)
//!            ──anchors ▸ threshold ▸ NMS──▶ faces (boxes, 5 keypoints, frame pixels)
//!            ──similarity onto the swapper's template (inswapper: 128 px, +8 px in x)──▶ crop map
//!            ──bilinear warp straight from Y/U/V──▶ target crop (3×S×S, [0,1])
//!            ──swapper(target, source identity), on its own pixel scale──▶ swapped crop
//!            ──RGB→YUV of the crop, feathered mask, inverse warp of the face box only──▶ Y/U/V
//! ```
//!
//! The swapper's source identity (inswapper: `normalise(normalise(ArcFace(source)) · emap)`;
//! other families: [`swapper`]) is computed once per source face ([`Engine::source_face`]) and
//! reused for every frame.
//!
//! Modules: [`geometry`] (similarity transform, template, letterbox), [`color`] (BT.601,
//! samplers), [`detect`] (SCRFD), [`identity`] (ArcFace, the swappers' identity inputs),
//! [`swapper`] (the deep swapper families and their contracts), [`paste`] (crop warp, mask,
//! paste-back), [`bench`] (stage timings).

pub mod color;
pub mod detect;
pub mod geometry;
pub mod identity;
pub mod live;
mod offline;
pub use offline::{compose, swap_image_files};
pub mod mesh;
pub mod paste;
pub mod picker;
pub mod swapper;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::RgbImage;
use serde::Deserialize;

use crate::infer::{InferError, ModelsConfig};
use crate::media::{FrameError, I420Frame};
use color::Planes;
pub use detect::{DetectParams, Detection, Detector};
use geometry::{arcface_template, similarity, Affine, Point};
pub use identity::{Emap, Embedding, IdentityMap, Recognizer};
use paste::{Mask, PasteScratch};
pub use swapper::{Contract, Swapper};

/// `[swap]` section of the configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SwapConfig {
    /// Side of the detector's square input (multiple of 32).
    pub det_size: u32,
    /// Least detection score kept.
    pub score_threshold: f32,
    /// IoU above which NMS drops the weaker box.
    pub nms_threshold: f32,
    /// Most faces swapped per frame.
    pub max_faces: usize,
    /// Which faces a frame swaps when no reference face is given.
    pub selection: SelectionMode,
    /// Least cosine similarity for [`Selection::Reference`].
    pub min_similarity: f32,
    /// Paste-back mask erosion, crop pixels.
    pub mask_erode_px: usize,
    /// Paste-back mask blur sigma, crop pixels.
    pub mask_blur_px: f32,
    /// Largest decoded image, pixels.
    pub max_image_pixels: u64,
    /// Largest image file, bytes.
    pub max_image_bytes: u64,
    /// Largest decoded face photo uploaded to the server, pixels (a face needs far fewer than
    /// `max_image_pixels`, and each upload being analysed holds its decoded image in memory).
    pub max_upload_pixels: u64,
    /// Longest a face photo upload's body may take to arrive once its headers are in, ms.
    pub upload_timeout_ms: u64,
    /// Live stage: the detector runs on every `detect_every`-th frame of a stream; the frames
    /// between reuse the smoothed keypoints of the last detection.
    pub detect_every: u32,
    /// Live stage: weight of the newest detection in the keypoint smoothing, `(0, 1]`
    /// (1 = no smoothing).
    pub smoothing: f32,
    /// Live stage: draw the "face swapped" disclosure label into swapped frames.
    pub label: bool,
    /// Live stage: add the invisible watermark ([`crate::media::watermark`]) to swapped faces.
    pub watermark: bool,
    /// Live stage: detector instances (worker threads, one session each).
    pub detector_workers: usize,
    /// Live stage: swapper instances (worker threads, one session each).
    pub swapper_workers: usize,
    /// Live stage: most requests per model run, for models with a dynamic batch dimension.
    pub max_batch: usize,
    /// Live stage: longest wait for a batch to fill, milliseconds.
    pub max_wait_ms: u64,
    /// Live stage: longest wait for one model result, queueing included, milliseconds.
    pub timeout_ms: u64,
    /// Live stage: most participants with a chosen face at once (admission); 0 disables it.
    pub capacity: usize,
    /// Folder of gallery faces; empty for none.
    pub gallery: String,
    /// Which swapper the live stage runs.
    pub swapper: SwapperChoice,
    /// Mesh tier: the detector that finds new faces.
    pub mesh_detector: MeshDetector,
    /// Mesh tier: least face-presence probability of a mesh for the face to count as there.
    pub mesh_presence: f32,
    /// Mesh tier: with faces tracked, look for new ones every n-th frame (when
    /// `selection = "all"` wants more); without a track, every frame.
    pub redetect_every: u32,
    /// Mesh tier: One Euro filter of the landmarks: cut-off when still (Hz) and its rise with
    /// speed (per face width per second).
    pub filter_min_cutoff: f32,
    pub filter_beta: f32,
    /// Mesh tier: soft edge of the face mask, as a fraction of the face's width.
    pub mesh_feather: f32,
    /// Mesh tier: match the source face's colour to the target's skin.
    pub colour_match: bool,
    /// Mesh tier: weight of the newest frame in the smoothed colour statistics, (0, 1].
    pub colour_smoothing: f32,
    /// Mesh tier: keep the wearer's own eyes and open mouth (blinks and speech show through).
    pub keep_eyes_mouth: bool,
    /// Mesh tier: face mesh instances (worker threads).
    pub mesh_workers: usize,
    /// Deep swapper: paste-back mask, the face oval from the face mesh or the eroded square.
    pub deep_mask: DeepMask,
    /// Deep swapper (with the oval mask): keep the wearer's own open mouth.
    pub mouth_mask: bool,
    /// Deep swapper: match the swapped face's colour to the wearer's skin.
    pub deep_colour_match: bool,
    /// Live stage: what a frame that cannot be swapped becomes, once a face is chosen.
    pub on_failure: live::OnFailure,
    /// Live stage: longest the last swapped frame is repeated (`on_failure = "hold"`), ms.
    pub hold_ms: u64,
    /// Where participants' faces may come from: uploaded photos and the gallery, or the
    /// gallery only.
    pub sources: FaceSources,
}

/// `swap.sources`: which faces participants may wear.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FaceSources {
    /// Uploaded photos (with the uploader's consent) and the gallery.
    Any,
    /// Only the operator's gallery: for public deployments.
    Gallery,
}

/// `swap.deep_mask`: how the deep swapper's face is pasted back.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeepMask {
    /// The face oval of the face mesh (packaged set), feathered: the whole face and nothing
    /// beyond it. Where the mesh finds no face, the square.
    Oval,
    /// The aligned crop's square, eroded and blurred (`mask_erode_px`, `mask_blur_px`).
    Square,
}

/// `swap.swapper`: which swapper the live stage runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SwapperChoice {
    /// A deep swapper when its files are in `models.dir`, else the mesh swapper.
    Auto,
    /// The mesh swapper on the packaged models.
    Mesh,
    /// A deep swapper by its family's name (`inswapper_128`, `hyperswap_1a_256`, …;
    /// [`swapper::CONTRACTS`]).
    Deep(&'static Contract),
}

impl<'de> Deserialize<'de> for SwapperChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        match name.as_str() {
            "auto" => Ok(Self::Auto),
            "mesh" => Ok(Self::Mesh),
            other => Contract::by_name(other).map(Self::Deep).ok_or_else(|| {
                let names: Vec<&str> = swapper::CONTRACTS.iter().map(|c| c.name).collect();
                serde::de::Error::custom(format!(
                    "unknown swapper {other:?}: expected \"auto\", \"mesh\" or one of {}",
                    names.join(", ")
                ))
            }),
        }
    }
}

impl SwapperChoice {
    /// What `swap.swapper = "auto"` runs with these models: a deep swapper when any of its
    /// files is in `models.dir` (then all must be, and right; with `models.swapper` set, that
    /// file is inswapper_128's), else the mesh swapper when any packaged file is there, else
    /// nothing.
    pub fn auto(models: &ModelsConfig) -> Option<Self> {
        let inswapper = &swapper::CONTRACTS[0];
        let deep = if models.swapper.is_empty() {
            swapper::CONTRACTS.iter().find(|c| c.path(models).exists())
        } else {
            None
        };
        if let Some(contract) = deep {
            Some(Self::Deep(contract))
        } else if inswapper.files(models).iter().any(|f| f.exists()) {
            Some(Self::Deep(inswapper))
        } else if models.mesh_files().iter().any(|f| f.exists()) {
            Some(Self::Mesh)
        } else {
            None
        }
    }

    /// The swapper this choice runs with these models: a deep family, or `None` for the mesh
    /// swapper (and for "auto" with no file at all).
    pub fn deep(self, models: &ModelsConfig) -> Option<&'static Contract> {
        match self {
            Self::Deep(c) => Some(c),
            Self::Mesh => None,
            Self::Auto => match Self::auto(models) {
                Some(Self::Deep(c)) => Some(c),
                _ => None,
            },
        }
    }
}

/// `swap.mesh_detector`: the mesh tier's face detector.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MeshDetector {
    /// BlazeFace (Apache-2.0): faces at webcam distance, about 2 ms a frame.
    Blazeface,
    /// SCRFD from the packaged set: small and many faces, slower, non-commercial weights.
    Scrfd,
}

impl SwapConfig {
    /// Checks ranges; called by `Config` validation.
    pub fn validate(&self) -> Result<(), String> {
        if self.det_size < 64 || self.det_size > 2048 || self.det_size % 32 != 0 {
            return Err("swap.det_size must be a multiple of 32 between 64 and 2048".into());
        }
        if !(0.0..=1.0).contains(&self.score_threshold)
            || !(0.0..=1.0).contains(&self.nms_threshold)
        {
            return Err("swap.score_threshold and swap.nms_threshold must be within 0..1".into());
        }
        if self.max_faces == 0 {
            return Err("swap.max_faces must be at least 1".into());
        }
        if !(-1.0..=1.0).contains(&self.min_similarity) {
            return Err("swap.min_similarity must be within -1..1".into());
        }
        // In 128 px units whatever the crop (scaled for 256 px swappers).
        if self.mask_erode_px >= 128 / 2 - 4 {
            return Err("swap.mask_erode_px must be below 60".into());
        }
        if !(0.0..=20.0).contains(&self.mask_blur_px) {
            return Err("swap.mask_blur_px must be within 0..20".into());
        }
        if !(100..=300_000).contains(&self.upload_timeout_ms) {
            return Err("swap.upload_timeout_ms must be within 100..=300000".into());
        }
        if self.max_upload_pixels == 0 || self.max_upload_pixels > self.max_image_pixels {
            return Err(
                "swap.max_upload_pixels must be positive and at most swap.max_image_pixels".into(),
            );
        }
        if self.max_image_pixels == 0 || self.max_image_bytes == 0 {
            return Err("swap.max_image_pixels and swap.max_image_bytes must be positive".into());
        }
        if !(1..=120).contains(&self.detect_every) {
            return Err("swap.detect_every must be within 1..=120".into());
        }
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return Err("swap.smoothing must be within (0, 1]".into());
        }
        if !(0.0..=1.0).contains(&self.mesh_presence) {
            return Err("swap.mesh_presence must be within 0..1".into());
        }
        if !(1..=600).contains(&self.redetect_every) {
            return Err("swap.redetect_every must be within 1..=600".into());
        }
        if !(self.filter_min_cutoff > 0.0 && self.filter_min_cutoff <= 100.0)
            || !(0.0..=1000.0).contains(&self.filter_beta)
        {
            return Err(
                "swap.filter_min_cutoff must be within (0, 100] and swap.filter_beta within 0..1000"
                    .into(),
            );
        }
        if !(0.0..=0.5).contains(&self.mesh_feather) {
            return Err("swap.mesh_feather must be within 0..0.5".into());
        }
        if !(self.colour_smoothing > 0.0 && self.colour_smoothing <= 1.0) {
            return Err("swap.colour_smoothing must be within (0, 1]".into());
        }
        if self.hold_ms > 10_000 {
            return Err("swap.hold_ms must be at most 10000".into());
        }
        if !(1..=64).contains(&self.mesh_workers) {
            return Err("swap.mesh_workers must be within 1..=64".into());
        }
        if self.capacity > 100_000 {
            return Err("swap.capacity must be at most 100000".into());
        }
        for workers in [self.detector_workers, self.swapper_workers] {
            self.scheduler_settings(workers)
                .validate()
                .map_err(|e| format!("swap scheduler: {e} (swap.*_workers, swap.max_batch, swap.max_wait_ms, swap.timeout_ms)"))?;
        }
        Ok(())
    }
}

impl SwapConfig {
    /// The live stage's scheduler settings for a role with `workers` instances. The queue
    /// holds one request per admitted stream, plus room for source-face uploads.
    pub fn scheduler_settings(&self, workers: usize) -> crate::infer::scheduler::SchedulerSettings {
        crate::infer::scheduler::SchedulerSettings {
            workers,
            max_batch: self.max_batch,
            max_wait: Duration::from_millis(self.max_wait_ms),
            timeout: Duration::from_millis(self.timeout_ms),
            queue_depth: self.capacity.saturating_add(8),
        }
    }
}

/// The configured default for which faces to swap.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SelectionMode {
    Largest,
    All,
}

/// Which faces of a frame get swapped.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// The face with the largest box.
    Largest,
    /// Every face (up to `swap.max_faces`, largest first).
    All,
    /// The face most similar to a reference identity, if at least `min_similarity`.
    Reference {
        embedding: Embedding,
        min_similarity: f32,
    },
}

impl Selection {
    /// The face most like `embedding`, with the configured least similarity.
    pub fn like(embedding: Embedding, config: &SwapConfig) -> Self {
        Selection::Reference {
            embedding,
            min_similarity: config.min_similarity,
        }
    }
}

impl From<SelectionMode> for Selection {
    fn from(mode: SelectionMode) -> Self {
        match mode {
            SelectionMode::Largest => Selection::Largest,
            SelectionMode::All => Selection::All,
        }
    }
}

/// What can go wrong in the face pipeline.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error(transparent)]
    Infer(#[from] InferError),
    #[error("cannot read the swapper's emap: {0}")]
    Emap(String),
    #[error("unexpected detector output: {0}")]
    DetectorOutput(String),
    #[error("unexpected model output: {0}")]
    ModelOutput(String),
    /// The source photo has no face; carries the photo's path when there is one.
    #[error("no face found in the source image{}", .0.as_deref().map(|p| format!(" {p}")).unwrap_or_default())]
    NoSourceFace(Option<String>),
    #[error("no face found in the target image {0}")]
    NoTargetFace(String),
    #[error("no face found in the reference image {0}")]
    NoReferenceFace(String),
    #[error("{path}: {message}")]
    Image { path: String, message: String },
    /// Refused before decoding: the header alone says it is too big (a decompression bomb).
    #[error("{path}: {width}x{height} is more than swap.max_image_pixels ({max})")]
    TooManyPixels {
        path: String,
        width: u32,
        height: u32,
        max: u64,
    },
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Time spent in each stage of one call; the `*_run` fields are model runs, the rest is CPU
/// work of this module.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct StageTimings {
    /// I420 → letterboxed, normalised RGB detector input (colour conversion and resize).
    pub letterbox: Duration,
    pub detect_run: Duration,
    /// Anchor decoding, threshold, NMS, mapping back to the frame.
    pub detect_post: Duration,
    /// Similarity transforms and crop warps straight from I420 (colour conversion included).
    pub align: Duration,
    /// ArcFace runs (only with a reference face).
    pub recognize_run: Duration,
    pub swap_run: Duration,
    /// Swapped crop RGB → YUV.
    pub colour_out: Duration,
    /// Feathered blend of the face box into Y, U and V.
    pub paste: Duration,
    /// The whole call.
    pub total: Duration,
}

impl StageTimings {
    /// Everything but the model runs.
    pub fn cpu(&self) -> Duration {
        self.total
            .saturating_sub(self.detect_run + self.recognize_run + self.swap_run)
    }
}

/// One swapped face.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SwappedFace {
    pub detection: Detection,
    /// The frame box written, `[x0, y0, x1, y1)`; nothing outside it changed.
    pub paste_box: [u32; 4],
    /// The face's 468 mesh landmarks, when the mesh swapper computed them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mesh: Option<Vec<geometry::Point>>,
}

/// What [`Engine::swap_frame`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SwapReport {
    /// Every face the detector reported (after NMS).
    pub detected: Vec<Detection>,
    pub swapped: Vec<SwappedFace>,
    pub timings: StageTimings,
}

/// What the deep swapper needs of a source face: its ArcFace embedding and the swapper's
/// `source` input made of it (inswapper's latent, hyperswap's embedding, …).
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub embedding: Embedding,
    /// The swapper's `source` input.
    pub latent: Vec<f32>,
}

/// A source face, computed once per source photo for the swapper that runs: the deep
/// swapper's identity, or the mesh swapper's face region with its landmarks.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceFace {
    /// Where the face was in the source photo.
    pub detection: Detection,
    pub identity: Option<Identity>,
    pub mesh: Option<std::sync::Arc<mesh::MeshSource>>,
}

impl SourceFace {
    /// The source identity of a detected face from its ArcFace embedding: the running
    /// swapper's `source` input through `identity`.
    pub fn new(
        embedding: Embedding,
        detection: Detection,
        identity: &IdentityMap,
    ) -> Result<Self, SwapError> {
        let latent = identity.source(&embedding)?;
        Ok(Self {
            detection,
            identity: Some(Identity { embedding, latent }),
            mesh: None,
        })
    }

    /// A source face for the mesh swapper.
    pub fn of_mesh(source: mesh::MeshSource, detection: Detection) -> Self {
        Self {
            detection,
            identity: None,
            mesh: Some(std::sync::Arc::new(source)),
        }
    }

    /// The deep swapper's latent; an error for a face computed for the mesh swapper.
    pub fn latent(&self) -> Result<&[f32], SwapError> {
        self.identity
            .as_ref()
            .map(|i| i.latent.as_slice())
            .ok_or_else(|| {
                SwapError::ModelOutput("this source face was made for the mesh swapper".into())
            })
    }

    pub fn embedding(&self) -> Option<&Embedding> {
        self.identity.as_ref().map(|i| &i.embedding)
    }
}

/// The three models, the swapper's identity map and the reusable buffers of the pipeline.
/// Single owner: model runs need `&mut`.
pub struct Engine {
    detector: Detector,
    recognizer: Recognizer,
    swapper: Swapper,
    /// The face mesh and topology for the oval mask (`swap.deep_mask = "oval"`).
    mesh: Option<(mesh::FaceMesh, mesh::Topology)>,
    identity: IdentityMap,
    mask: Mask,
    config: SwapConfig,
    crop: Vec<f32>,
    swapped: Vec<f32>,
    arc_crop: Vec<f32>,
    scratch: PasteScratch,
}

/// Side of ArcFace's crop.
pub const ARC: usize = identity::ARCFACE_SIZE;

impl Engine {
    /// Loads ONNX Runtime (once per process) and the models of the deep swapper `swap.swapper`
    /// names (inswapper_128 for "auto" without any deep file), checking each against its
    /// contract.
    pub fn load(models: &ModelsConfig, config: &SwapConfig) -> Result<Self, SwapError> {
        let contract = config
            .swapper
            .deep(models)
            .unwrap_or(&swapper::CONTRACTS[0]);
        let rt = crate::infer::runtime(models)?;
        let detector = Detector::load(rt, models, &models.detector_path(), config.det_size)?;
        let recognizer = Recognizer::load(rt, models, &models.recognizer_path())?;
        let path = contract.path(models);
        let swapper = Swapper::load(rt, models, &contract.runtime_path(models), contract)?;
        let identity = IdentityMap::load(rt, models, contract, &path)?;
        let mesh = match config.deep_mask {
            DeepMask::Oval => Some((
                mesh::FaceMesh::load(rt, models, &models.mesh_path())?,
                mesh::Topology::load(&models.topology_path())?,
            )),
            DeepMask::Square => None,
        };
        Ok(Self {
            detector,
            recognizer,
            swapper,
            mesh,
            identity,
            mask: crop_mask(contract, config),
            config: config.clone(),
            crop: vec![0.0; contract.crop_len()],
            swapped: vec![0.0; contract.crop_len()],
            arc_crop: vec![0.0; 3 * ARC * ARC],
            scratch: PasteScratch::default(),
        })
    }

    pub fn config(&self) -> &SwapConfig {
        &self.config
    }

    fn params(&self) -> DetectParams {
        DetectParams {
            score_threshold: self.config.score_threshold,
            nms_threshold: self.config.nms_threshold,
        }
    }

    /// Detected faces of a frame, best score first.
    pub fn detect(&mut self, frame: &I420Frame) -> Result<Vec<Detection>, SwapError> {
        let params = self.params();
        self.detector
            .detect(Planes::of(frame), &params, &mut StageTimings::default())
    }

    /// ArcFace embedding of a detected face.
    pub fn embed(&mut self, frame: &I420Frame, face: &Detection) -> Result<Embedding, SwapError> {
        align_for_identity(frame, &face.kps, &mut self.arc_crop)?;
        self.recognizer.embed(&self.arc_crop)
    }

    /// The source face of a detected face from its embedding.
    pub fn source_of(
        &self,
        embedding: Embedding,
        face: Detection,
    ) -> Result<SourceFace, SwapError> {
        SourceFace::new(embedding, face, &self.identity)
    }

    /// The identity of the largest face of a source photo; `NoSourceFace` when there is none.
    pub fn source_face(&mut self, photo: &RgbImage) -> Result<SourceFace, SwapError> {
        let frame = color::rgb_to_i420(photo)?;
        let faces = self.detect(&frame)?;
        let face = largest(&faces).ok_or(SwapError::NoSourceFace(None))?;
        let embedding = self.embed(&frame, &face)?;
        SourceFace::new(embedding, face, &self.identity)
    }

    /// A selection of the face most like the face in the photo at `path` (at least
    /// `swap.min_similarity`).
    pub fn reference(&mut self, path: &Path) -> Result<Selection, SwapError> {
        let photo = load_image(path, &self.config)?;
        let face = self.source_face(&photo).map_err(|e| match e {
            SwapError::NoSourceFace(_) => SwapError::NoReferenceFace(path.display().to_string()),
            other => other,
        })?;
        let embedding = face
            .identity
            .map(|i| i.embedding)
            .ok_or_else(|| SwapError::NoReferenceFace(path.display().to_string()))?;
        Ok(Selection::like(embedding, &self.config))
    }

    /// Swaps the selected faces of `frame` in place with `source`. A frame without a face comes
    /// back unchanged, with an empty report.
    pub fn swap_frame(
        &mut self,
        frame: &mut I420Frame,
        source: &SourceFace,
        selection: &Selection,
    ) -> Result<SwapReport, SwapError> {
        let start = Instant::now();
        let mut timings = StageTimings::default();
        let params = self.params();
        let detected = self
            .detector
            .detect(Planes::of(frame), &params, &mut timings)?;
        let chosen = self.select(frame, &detected, selection, &mut timings)?;
        let mut swapped = Vec::with_capacity(chosen.len());
        for face in chosen {
            let t0 = Instant::now();
            let Some(Aligned {
                to_crop,
                paste_box: bx,
            }) = align_for_swap(frame, &face.kps, self.swapper.contract(), &mut self.crop)
            else {
                continue;
            };
            let t1 = Instant::now();
            timings.align += t1 - t0;
            self.swapper
                .swap(&self.crop, source.latent()?, &mut self.swapped)?;
            let t2 = Instant::now();
            timings.swap_run += t2 - t1;
            // The face mesh for the oval mask counts as alignment work.
            let tm = Instant::now();
            let oval = match &mut self.mesh {
                Some((face_mesh, topology)) => {
                    let m = face_mesh.run(Planes::of(frame), &mesh::Roi::from_detection(&face))?;
                    (m.presence >= self.config.mesh_presence).then(|| {
                        mesh::crop_mask(
                            &self.mask,
                            &to_crop,
                            &m.points,
                            topology,
                            self.config.mesh_feather,
                            self.config.mouth_mask,
                        )
                    })
                }
                None => None,
            };
            timings.align += tm.elapsed();
            let mask = oval.as_ref().unwrap_or(&self.mask);
            let t2 = Instant::now();
            paste::crop_to_yuv(
                &self.swapped,
                self.swapper.contract().size,
                &mut self.scratch,
            );
            if self.config.deep_colour_match {
                paste::match_colour(&mut self.scratch, &self.crop, mask);
            }
            let t3 = Instant::now();
            timings.colour_out += t3 - t2;
            paste::paste_back(frame, &to_crop, mask, &self.scratch, bx);
            timings.paste += t3.elapsed();
            swapped.push(SwappedFace {
                detection: face,
                paste_box: bx,
                mesh: None,
            });
        }
        timings.total = start.elapsed();
        Ok(SwapReport {
            detected,
            swapped,
            timings,
        })
    }

    fn select(
        &mut self,
        frame: &I420Frame,
        detected: &[Detection],
        selection: &Selection,
        timings: &mut StageTimings,
    ) -> Result<Vec<Detection>, SwapError> {
        Ok(match selection {
            Selection::Largest => largest(detected).into_iter().collect(),
            // Offline, every face: `max_faces` caps live streams only.
            Selection::All => by_area(detected, usize::MAX),
            Selection::Reference {
                embedding,
                min_similarity,
            } => {
                let mut best: Option<(f32, Detection)> = None;
                for face in by_area(detected, self.config.max_faces) {
                    let t = Instant::now();
                    let e = self.embed(frame, &face)?;
                    timings.recognize_run += t.elapsed();
                    let s = e.similarity(embedding);
                    if s >= *min_similarity && best.is_none_or(|(b, _)| s > b) {
                        best = Some((s, face));
                    }
                }
                best.map(|(_, f)| f).into_iter().collect()
            }
        })
    }
}

/// Where one face's aligned swapper crop came from, to paste the swapped crop back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aligned {
    /// Frame pixels → crop pixels (paste-back samples the crop through it).
    pub to_crop: Affine,
    /// The frame box the crop covers, `[x0, y0, x1, y1)` (see [`paste::paste_box`]).
    pub paste_box: [u32; 4],
}

/// Aligns one face for the swapper of `contract`: the similarity of its keypoints onto the
/// swapper's template and the crop (planar RGB in [0,1], 3×S×S) sampled straight from I420
/// into `crop`. `None` when the keypoints are degenerate or the face misses the frame (offline
/// the face is skipped; live, the frame fails closed). Shared by [`Engine::swap_frame`] and the
/// live stage.
pub fn align_for_swap(
    frame: &I420Frame,
    kps: &[Point; 5],
    contract: &Contract,
    crop: &mut [f32],
) -> Option<Aligned> {
    let size = contract.size;
    if crop.len() != contract.crop_len() {
        return None;
    }
    let to_crop = similarity(kps, &contract.template.points(size))?;
    let to_frame = to_crop.invert()?;
    let bx = paste::paste_box(&to_frame, size, frame.width(), frame.height())?;
    paste::warp_crop(Planes::of(frame), &to_frame, size, 1.0 / 255.0, 0.0, crop);
    Some(Aligned {
        to_crop,
        paste_box: bx,
    })
}

/// The square mask of a swapper's crop: `swap.mask_erode_px` and `mask_blur_px` are in 128 px
/// units, scaled to the crop.
pub fn crop_mask(contract: &Contract, config: &SwapConfig) -> Mask {
    Mask::new(
        contract.size,
        contract.scale_128(config.mask_erode_px as f32).round() as usize,
        contract.scale_128(config.mask_blur_px),
    )
}

/// Aligns one face for ArcFace: 3×112×112, normalised to (x − 127.5)/127.5, into `crop`.
pub fn align_for_identity(
    frame: &I420Frame,
    kps: &[Point; 5],
    crop: &mut [f32],
) -> Result<(), SwapError> {
    let degenerate = || SwapError::ModelOutput("degenerate face keypoints".into());
    if crop.len() != 3 * ARC * ARC {
        return Err(SwapError::ModelOutput(
            "identity crop of the wrong size".into(),
        ));
    }
    let to_crop = similarity(kps, &arcface_template(ARC as u32)).ok_or_else(degenerate)?;
    let to_frame = to_crop.invert().ok_or_else(degenerate)?;
    paste::warp_crop(Planes::of(frame), &to_frame, ARC, 1.0 / 127.5, -1.0, crop);
    Ok(())
}

/// The face with the largest box.
pub fn largest(faces: &[Detection]) -> Option<Detection> {
    faces
        .iter()
        .copied()
        .max_by(|a, b| a.area().total_cmp(&b.area()))
}

/// Up to `n` faces, largest first.
pub fn by_area(faces: &[Detection], n: usize) -> Vec<Detection> {
    let mut v = faces.to_vec();
    v.sort_by(|a, b| b.area().total_cmp(&a.area()));
    v.truncate(n);
    v
}

/// Decodes an image from memory with limits on its size: never more than `max_pixels`
/// decoded pixels, whatever the header claims.
pub fn decode_image(bytes: &[u8], max_pixels: u64, origin: &str) -> Result<RgbImage, SwapError> {
    let err = |message: String| SwapError::Image {
        path: origin.to_owned(),
        message,
    };
    fn reader(bytes: &[u8]) -> std::io::Result<image::ImageReader<std::io::Cursor<&[u8]>>> {
        image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()
    }
    // The JPEG decoder fills a cut-off image with grey instead of failing; a JPEG must end
    // with its end-of-image marker (trailing padding aside) to count as whole.
    let jpeg_end = if image::guess_format(bytes).ok() == Some(image::ImageFormat::Jpeg) {
        let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        if end < 2 || bytes[end - 2..end] != [0xFF, 0xD9] {
            return Err(err(
                "truncated JPEG: the end-of-image marker is missing".into()
            ));
        }
        Some(end - 2)
    } else {
        None
    };
    let (w, h) = reader(bytes)
        .map_err(|e| err(e.to_string()))?
        .into_dimensions()
        .map_err(|e| err(format!("not a readable JPEG/PNG/WebP image: {e}")))?;
    if u64::from(w) * u64::from(h) > max_pixels {
        return Err(SwapError::TooManyPixels {
            path: origin.to_owned(),
            width: w,
            height: h,
            max: max_pixels,
        });
    }
    let decode = |bytes: &[u8]| {
        let mut r = reader(bytes).map_err(|e| err(e.to_string()))?;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(w);
        limits.max_image_height = Some(h);
        limits.max_alloc = Some(max_pixels.saturating_mul(8));
        r.limits(limits);
        let img = r.decode().map_err(|e| err(format!("cannot decode: {e}")))?;
        Ok::<_, SwapError>(img.to_rgb8())
    };
    let img = decode(bytes)?;
    if let Some(eoi) = jpeg_end {
        // A JPEG cut off and given its end-of-image marker back decodes too: the decoder fills
        // what is missing from nothing. Decode it once more with other bits before the marker:
        // a whole image does not change (the bits after its last block are never read), a cut
        // one does wherever the filling began. The last row of blocks (16 pixels) is let be: some
        // encoders end the scan a few bits short, which only their last blocks notice.
        let mut filled = Vec::with_capacity(eoi + JPEG_FILLER.len() + 2);
        filled.extend_from_slice(&bytes[..eoi]);
        filled.extend_from_slice(&JPEG_FILLER);
        filled.extend_from_slice(&[0xFF, 0xD9]);
        let other = decode(&filled)?;
        let row = 3 * img.width() as usize;
        let first_change = img
            .as_raw()
            .chunks(row.max(1))
            .zip(other.as_raw().chunks(row.max(1)))
            .position(|(a, b)| a != b);
        // (The row above it may change too: chroma is upsampled across the block edge.)
        let last_mcu_row = (img.height() as usize).saturating_sub(1) / 16 * 16;
        if let Some(y) = first_change.filter(|&y| y + 1 < last_mcu_row) {
            return Err(err(format!(
                "truncated JPEG: its picture stops at about row {y} of {}",
                img.height()
            )));
        }
    }
    Ok(img)
}

/// Bits that a cut-off JPEG's decoder would read where its scan stops short (no 0xFF, which
/// would be a marker).
const JPEG_FILLER: [u8; 64] = [0x5A; 64];

/// Reads and decodes an image file within the configured limits.
pub fn load_image(path: &Path, config: &SwapConfig) -> Result<RgbImage, SwapError> {
    let origin = path.display().to_string();
    let err = |message: String| SwapError::Image {
        path: origin.clone(),
        message,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| err(e.to_string()))?
        .len();
    if len > config.max_image_bytes {
        return Err(err(format!(
            "{len} bytes is more than swap.max_image_bytes ({})",
            config.max_image_bytes
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    decode_image(&bytes, config.max_image_pixels, &origin)
}

/// Either swapper with one owner, for single pictures.
pub enum PictureEngine {
    Deep(Box<Engine>),
    Mesh(Box<mesh::MeshEngine>),
}

impl PictureEngine {
    /// The engine `swap.swapper` names ("auto": the deep models when any of their files is
    /// in `models.dir`, else the packaged set).
    pub fn load(models: &ModelsConfig, config: &SwapConfig) -> Result<Self, SwapError> {
        let choice = match config.swapper {
            SwapperChoice::Auto => SwapperChoice::auto(models).unwrap_or(SwapperChoice::Mesh),
            other => other,
        };
        Ok(match choice {
            SwapperChoice::Mesh => Self::Mesh(Box::new(mesh::MeshEngine::load(models, config)?)),
            _ => Self::Deep(Box::new(Engine::load(models, config)?)),
        })
    }

    pub fn config(&self) -> &SwapConfig {
        match self {
            Self::Deep(e) => e.config(),
            Self::Mesh(e) => e.config(),
        }
    }

    pub fn swapper_name(&self) -> &'static str {
        match self {
            Self::Deep(e) => e.swapper.contract().name,
            Self::Mesh(_) => "mesh",
        }
    }

    pub fn source_face(&mut self, photo: &RgbImage) -> Result<SourceFace, SwapError> {
        match self {
            Self::Deep(e) => e.source_face(photo),
            Self::Mesh(e) => e.source_face(&color::rgb_to_i420(photo)?),
        }
    }

    pub fn reference(&mut self, path: &Path) -> Result<Selection, SwapError> {
        match self {
            Self::Deep(e) => e.reference(path),
            Self::Mesh(_) => Err(SwapError::ModelOutput(
                "--reference needs the deep models (the mesh swapper has no recognizer)".into(),
            )),
        }
    }

    pub fn swap_frame(
        &mut self,
        frame: &mut I420Frame,
        source: &SourceFace,
        selection: &Selection,
    ) -> Result<SwapReport, SwapError> {
        match self {
            Self::Deep(e) => e.swap_frame(frame, source, selection),
            Self::Mesh(e) => e.swap_frame(frame, source, selection),
        }
    }
}

/// Default location of the committed stand-in models and test pictures.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from("models/fixtures")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, size: f32) -> Detection {
        Detection {
            score: 0.9,
            bbox: [x, 0.0, x + size, size],
            kps: [[0.0; 2]; 5],
        }
    }

    #[test]
    fn engine_can_move_to_a_worker_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Engine>();
        assert_send::<SourceFace>();
    }

    #[test]
    fn selection_by_area() {
        let faces = [det(0.0, 10.0), det(50.0, 30.0), det(100.0, 20.0)];
        assert_eq!(largest(&faces).unwrap().bbox[0], 50.0);
        let two: Vec<f32> = by_area(&faces, 2).iter().map(|d| d.bbox[0]).collect();
        assert_eq!(two, [50.0, 100.0]);
        assert!(largest(&[]).is_none());
    }

    #[test]
    fn bad_images_are_errors_not_panics() {
        let e = decode_image(b"not an image", 1000, "x").unwrap_err();
        assert!(e.to_string().contains("x:"), "{e}");
        // A valid PNG header claiming 100000x100000 is refused before decoding.
        let mut png = Vec::new();
        RgbImage::new(4, 4)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        // IHDR's CRC covers its type and data (bytes 12..29).
        let mut crc = flate2::Crc::new();
        crc.update(&png[12..29]);
        png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
        let e = decode_image(&png, 40_000_000, "big.png").unwrap_err();
        assert!(e.to_string().contains("max_image_pixels"), "{e}");
        // Truncated files.
        let mut ok = Vec::new();
        RgbImage::new(8, 8)
            .write_to(&mut std::io::Cursor::new(&mut ok), image::ImageFormat::Png)
            .unwrap();
        for cut in [0, 8, 20, ok.len() - 5] {
            assert!(decode_image(&ok[..cut], 1000, "cut.png").is_err(), "{cut}");
        }
        assert_eq!(
            decode_image(&ok, 1000, "ok.png").unwrap().dimensions(),
            (8, 8)
        );
    }

    #[test]
    fn a_jpeg_cut_off_and_given_its_end_marker_back_is_refused() {
        // A textured picture, baseline JPEG.
        let picture = RgbImage::from_fn(320, 240, |x, y| {
            let v = (x * 7 + y * 13 + (x * y) % 29) as u8;
            image::Rgb([v, v.wrapping_mul(3), 255 - v])
        });
        let mut whole = Vec::new();
        picture
            .write_to(
                &mut std::io::Cursor::new(&mut whole),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        assert_eq!(
            decode_image(&whole, 1 << 20, "whole.jpg")
                .unwrap()
                .dimensions(),
            (320, 240)
        );
        // Trailing zero padding after the marker is allowed.
        let mut padded = whole.clone();
        padded.extend_from_slice(&[0; 10]);
        assert!(decode_image(&padded, 1 << 20, "padded.jpg").is_ok());
        // The testcard photo too (its own encoder).
        let photo = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("models/fixtures/testcard_source.jpg"),
        )
        .unwrap();
        assert!(decode_image(&photo, 1 << 24, "photo.jpg").is_ok());
        // A packaged photo whose scan ends a few bits short: its last blocks read past the end.
        let short = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("models/packaged/photos/readme.jpg"),
        )
        .expect("the packaged set (scripts/setup.sh)");
        assert!(decode_image(&short, 1 << 24, "readme.jpg").is_ok());
        for (name, bytes) in [("generated", &whole), ("photo", &photo)] {
            for fraction in [0.2, 0.5, 0.8, 0.9] {
                let mut cut = bytes[..(bytes.len() as f64 * fraction) as usize].to_vec();
                cut.extend_from_slice(&[0xFF, 0xD9]);
                match decode_image(&cut, 1 << 24, "cut.jpg") {
                    Err(e) => assert!(
                        e.to_string().contains("truncated JPEG"),
                        "{name} {fraction}: {e}"
                    ),
                    Ok(_) => panic!("{name} cut at {fraction} and resealed was accepted"),
                }
            }
        }
    }

    #[test]
    fn default_config_is_valid_and_checked() {
        let c = crate::config::Config::defaults().swap;
        assert_eq!(c.validate(), Ok(()));
        let bad = SwapConfig {
            det_size: 100,
            ..c.clone()
        };
        assert!(bad.validate().is_err());
        let bad = SwapConfig {
            mask_erode_px: 70,
            ..c.clone()
        };
        assert!(bad.validate().is_err());
        // The live stage's keys.
        for bad in [
            SwapConfig {
                detect_every: 0,
                ..c.clone()
            },
            SwapConfig {
                smoothing: 0.0,
                ..c.clone()
            },
            SwapConfig {
                smoothing: f32::NAN,
                ..c.clone()
            },
            SwapConfig {
                swapper_workers: 0,
                ..c.clone()
            },
            SwapConfig {
                max_wait_ms: 300,
                timeout_ms: 300,
                ..c.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let off = SwapConfig { capacity: 0, ..c };
        assert_eq!(off.validate(), Ok(()), "capacity 0 turns the swap off");
    }
}
