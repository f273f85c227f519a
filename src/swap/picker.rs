//! Choosing a face for the live swap: an uploaded photo or one from the operator's gallery
//! becomes a [`SourceFace`] (identity latent computed once), with a small preview of the face
//! that was found. Photos are decoded in memory and dropped as soon as the latent exists: they
//! never touch the disk or the log.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use image::RgbImage;

use super::live::{LiveError, LiveSwap};
use super::{color, decode_image, largest, Detection, Engine, SourceFace, SwapConfig, SwapError};
use crate::infer::scheduler::AdmissionError;
use crate::media::I420Frame;

/// Where the live stage finds each participant's chosen face. The signalling edge writes it
/// when a participant picks or clears a face.
pub trait FaceRegistry: Send + Sync + 'static {
    /// Makes `face` the face of participant `owner` (its signalling id); refused when the
    /// server's face-swap capacity is taken.
    fn set(&self, owner: &str, face: Arc<SourceFace>) -> Result<(), AdmissionError>;
    /// No swap for `owner` (frees its capacity).
    fn clear(&self, owner: &str);
    fn get(&self, owner: &str) -> Option<Arc<SourceFace>>;
    /// Calls `listener` with what each wearer's frames carry whenever that changes (the live
    /// stage's debounced report); a registry without a stage never calls it.
    fn watch(&self, _listener: super::live::FaceListener) {}
}

impl FaceRegistry for super::live::LiveFaces {
    fn set(&self, owner: &str, face: Arc<SourceFace>) -> Result<(), AdmissionError> {
        super::live::LiveFaces::set(self, owner, face)
    }

    fn clear(&self, owner: &str) {
        super::live::LiveFaces::clear(self, owner);
    }

    fn get(&self, owner: &str) -> Option<Arc<SourceFace>> {
        super::live::LiveFaces::get(self, owner)
    }
}

/// The live stage's own registry, so that a face picked over HTTP is the one its frames wear.
impl FaceRegistry for super::live::LiveSwap {
    fn set(&self, owner: &str, face: Arc<SourceFace>) -> Result<(), AdmissionError> {
        self.faces().set(owner, face)
    }

    fn clear(&self, owner: &str) {
        self.faces().clear(owner);
    }

    fn get(&self, owner: &str) -> Option<Arc<SourceFace>> {
        self.faces().get(owner)
    }

    fn watch(&self, listener: super::live::FaceListener) {
        self.set_listener(listener);
    }
}

/// Largest side of a face preview, pixels.
const PREVIEW_SIDE: u32 = 160;

/// A chosen face: what the stage needs, and what the person sees.
#[derive(Debug, Clone)]
pub struct ChosenFace {
    pub source: Arc<SourceFace>,
    /// PNG of the detected face (with a margin), at most 160 px a side.
    pub preview_png: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum PickError {
    #[error("the file is {len} bytes; the limit is {max} bytes")]
    TooLarge { len: usize, max: u64 },
    #[error("the image is {width}x{height} pixels; the limit is {max} pixels")]
    TooManyPixels { width: u32, height: u32, max: u64 },
    /// Not decodable; the text says why (it names the accepted formats).
    #[error("{0}")]
    NotAnImage(String),
    #[error("no face was found in the photo; use a clear, front-facing photo of one face")]
    NoFace,
    #[error("the photo shows {0} faces; use a photo with exactly one face")]
    SeveralFaces(usize),
    #[error("no gallery face is called {0:?}")]
    NotInGallery(String),
    #[error("face swap is not available on this server: {0}")]
    Unavailable(String),
    #[error("face analysis failed: {0}")]
    Failed(String),
}

impl PickError {
    /// Stable code for the HTTP edge.
    pub fn code(&self) -> &'static str {
        match self {
            PickError::TooLarge { .. } | PickError::TooManyPixels { .. } => "image_too_large",
            PickError::NotAnImage(_) => "not_an_image",
            PickError::NoFace => "no_face",
            PickError::SeveralFaces(_) => "several_faces",
            PickError::NotInGallery(_) => "not_in_gallery",
            PickError::Unavailable(_) => "swap_unavailable",
            PickError::Failed(_) => "internal",
        }
    }
}

/// What computes source faces: the live stage's own schedulers (the server), or an engine of
/// its own behind a lock (tests of the picker alone).
enum Analyser {
    Live(Arc<LiveSwap>),
    Engine(Mutex<Engine>),
}

impl Analyser {
    /// The faces of a photo and, for its largest one, the source face.
    fn analyse(&self, frame: &I420Frame) -> Result<(Vec<Detection>, SourceFace), PickError> {
        let failed = |e: String| PickError::Failed(e);
        let faces = match self {
            Analyser::Live(live) => live.detect(frame).map_err(|e| failed(e.to_string()))?,
            Analyser::Engine(engine) => lock(engine)
                .detect(frame)
                .map_err(|e| failed(e.to_string()))?,
        };
        match faces.len() {
            0 => return Err(PickError::NoFace),
            1 => {}
            n => return Err(PickError::SeveralFaces(n)),
        }
        let face = faces[0];
        let source = match self {
            Analyser::Live(live) => live.source_face_of(frame, &face).map_err(|e| match e {
                LiveError::Swap(SwapError::NoSourceFace(_)) => PickError::NoFace,
                other => failed(other.to_string()),
            })?,
            Analyser::Engine(engine) => {
                let mut engine = lock(engine);
                let embedding = engine
                    .embed(frame, &face)
                    .map_err(|e| failed(e.to_string()))?;
                engine
                    .source_of(embedding, face)
                    .map_err(|e| failed(e.to_string()))?
            }
        };
        Ok((faces, source))
    }
}

fn lock(engine: &Mutex<Engine>) -> std::sync::MutexGuard<'_, Engine> {
    engine.lock().unwrap_or_else(|e| e.into_inner())
}

/// Turns photos into source faces. Choosing a face is rare (once per participant, or on a
/// change); on the server it goes through the live stage's schedulers, behind the streams.
pub struct FacePicker {
    analyser: Analyser,
    config: SwapConfig,
    gallery: Option<Gallery>,
}

/// The operator's gallery: its folder, and the names of the images in it that hold exactly one
/// face (checked once, at start).
struct Gallery {
    dir: PathBuf,
    names: Vec<String>,
}

impl FacePicker {
    /// A picker with an engine of its own.
    pub fn new(engine: Engine, gallery: Option<PathBuf>) -> Self {
        let picker = Self {
            config: engine.config().clone(),
            analyser: Analyser::Engine(Mutex::new(engine)),
            gallery: None,
        };
        picker.with_gallery(gallery)
    }

    /// A picker on the live stage's models (either swapper): no second copy of any model.
    pub fn live(live: Arc<LiveSwap>, config: &SwapConfig, gallery: Option<PathBuf>) -> Self {
        let picker = Self {
            config: config.clone(),
            analyser: Analyser::Live(live),
            gallery: None,
        };
        picker.with_gallery(gallery)
    }

    /// Takes the gallery's images that hold exactly one face; the others are left out, each
    /// with a log line that says why. Blocking (model runs).
    fn with_gallery(mut self, dir: Option<PathBuf>) -> Self {
        let Some(dir) = dir else {
            return self;
        };
        let mut names = Vec::new();
        for name in image_stems(&dir) {
            let face = read_gallery_image(&dir, &name).and_then(|bytes| self.from_photo(&bytes));
            match face {
                Ok(_) => names.push(name),
                Err(e) => tracing::warn!(
                    image = %name,
                    folder = %dir.display(),
                    reason = %e,
                    "gallery image left out: it must hold exactly one face"
                ),
            }
        }
        tracing::info!(faces = names.len(), folder = %dir.display(), "gallery checked");
        self.gallery = Some(Gallery { dir, names });
        self
    }

    /// A face from uploaded bytes. Blocking (model runs): call it off the async threads.
    pub fn from_photo(&self, bytes: &[u8]) -> Result<ChosenFace, PickError> {
        if bytes.len() as u64 > self.config.max_image_bytes {
            return Err(PickError::TooLarge {
                len: bytes.len(),
                max: self.config.max_image_bytes,
            });
        }
        let photo =
            decode_image(bytes, self.config.max_upload_pixels, "upload").map_err(|e| match e {
                SwapError::Image { message, .. } => PickError::NotAnImage(message),
                SwapError::TooManyPixels {
                    width, height, max, ..
                } => PickError::TooManyPixels { width, height, max },
                other => PickError::Failed(other.to_string()),
            })?;
        self.from_image(&photo)
    }

    fn from_image(&self, photo: &RgbImage) -> Result<ChosenFace, PickError> {
        let frame = color::rgb_to_i420(photo).map_err(|e| PickError::NotAnImage(e.to_string()))?;
        let (faces, source) = self.analyser.analyse(&frame)?;
        let face = largest(&faces).unwrap_or(source.detection);
        Ok(ChosenFace {
            preview_png: preview(photo, face.bbox),
            source: Arc::new(source),
        })
    }

    /// The gallery's faces: the names (file names without extension) of the images that
    /// passed the start-up check.
    pub fn gallery(&self) -> Vec<String> {
        self.gallery
            .as_ref()
            .map_or_else(Vec::new, |g| g.names.clone())
    }

    /// The bytes of a gallery image by name (only names [`Self::gallery`] lists).
    pub fn gallery_image(&self, name: &str) -> Result<Vec<u8>, PickError> {
        let gallery = self
            .gallery
            .as_ref()
            .filter(|g| g.names.iter().any(|n| n == name))
            .ok_or_else(|| PickError::NotInGallery(name.into()))?;
        read_gallery_image(&gallery.dir, name)
    }

    /// A face from the gallery.
    pub fn from_gallery(&self, name: &str) -> Result<ChosenFace, PickError> {
        let bytes = self.gallery_image(name)?;
        self.from_photo(&bytes)
    }
}

/// The names (file names without extension) of the JPEG, PNG and WebP images in `dir`, sorted.
fn image_stems(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.path().file_name()?.to_str().map(str::to_owned))
        .filter_map(|file| {
            let (stem, ext) = file.rsplit_once('.')?;
            matches!(
                ext.to_ascii_lowercase().as_str(),
                "jpg" | "jpeg" | "png" | "webp"
            )
            .then(|| stem.to_owned())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn read_gallery_image(dir: &std::path::Path, name: &str) -> Result<Vec<u8>, PickError> {
    for ext in ["jpg", "jpeg", "png", "webp", "JPG", "JPEG", "PNG", "WEBP"] {
        if let Ok(bytes) = std::fs::read(dir.join(format!("{name}.{ext}"))) {
            return Ok(bytes);
        }
    }
    Err(PickError::NotInGallery(name.into()))
}

/// The face's box with a 25 % margin, scaled to fit 160 px, as PNG.
fn preview(photo: &RgbImage, bbox: [f32; 4]) -> Vec<u8> {
    let (w, h) = (photo.width() as f32, photo.height() as f32);
    let margin = 0.25 * (bbox[2] - bbox[0]).max(bbox[3] - bbox[1]);
    let x0 = (bbox[0] - margin).clamp(0.0, w - 1.0) as u32;
    let y0 = (bbox[1] - margin).clamp(0.0, h - 1.0) as u32;
    let x1 = (bbox[2] + margin).clamp(x0 as f32 + 1.0, w) as u32;
    let y1 = (bbox[3] + margin).clamp(y0 as f32 + 1.0, h) as u32;
    let crop = image::imageops::crop_imm(photo, x0, y0, x1 - x0, y1 - y0).to_image();
    let scale = (PREVIEW_SIDE as f32 / crop.width().max(crop.height()) as f32).min(1.0);
    let small = image::imageops::resize(
        &crop,
        ((crop.width() as f32 * scale) as u32).max(1),
        ((crop.height() as f32 * scale) as u32).max(1),
        image::imageops::FilterType::Triangle,
    );
    let mut png = Vec::new();
    if let Err(e) = small.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png) {
        tracing::warn!(error = %e, "cannot encode a face preview");
    }
    png
}
