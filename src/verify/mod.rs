//! `facerelay verify FILE`: did facerelay swap the faces of this image or video?
//!
//! Two marks are looked for (docs/marking.md): the invisible watermark in the pixels of
//! swapped faces ([`crate::media::watermark`], which survives a re-encode), in every decoded
//! frame, and the facerelay SEI message in the H.264 bitstream ([`crate::media::sei`], only in
//! the stream as the server sent it). Images (PNG, JPEG, WebP), raw H.264 (Annex B), MP4 and
//! WebM/Matroska with H.264 video are read ([`crate::media::container`]).
//!
//! An image's XMP metadata is read too ([`crate::media::xmp`]): `facerelay swap` declares its
//! outputs `compositeSynthetic` there. It is reported beside the watermark, not counted in the
//! verdict (anyone can write or strip it).
//!
//! The verdict: an image is swapped when its score passes [`watermark::THRESHOLD`]; a video
//! when any frame carries the SEI mark, or when the watermark is found in at least
//! [`MIN_MARKED_FRAMES`] frames and [`MIN_MARKED_SHARE`] of its frames.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::media::container::{self, ContainerError, Format};
use crate::media::{sei, watermark, xmp, VideoDecoder};

/// A video needs the watermark in at least this many frames…
pub const MIN_MARKED_FRAMES: usize = 3;
/// …and in at least this share of its decoded frames.
pub const MIN_MARKED_SHARE: f64 = 0.02;

/// Largest file read, bytes.
const MAX_FILE_BYTES: u64 = 4 << 30;
/// Largest picture decoded, pixels (4K UHD).
const MAX_PIXELS: u32 = 3840 * 2160;

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// An image (PNG, JPEG, WebP) or a video (raw H.264, MP4, WebM with H.264).
    pub file: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} is larger than 4 GiB")]
    TooLarge(String),
    #[error("not an image (PNG, JPEG, WebP) or video (raw H.264, MP4, WebM) that facerelay reads")]
    Unknown,
    #[error("cannot decode the image: {0}")]
    Image(String),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error("no frame of the video could be decoded ({0} access units read)")]
    NothingDecoded(usize),
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `image`, `h264`, `mp4` or `webm`.
    pub kind: &'static str,
    /// Frames decoded (1 for an image).
    pub frames: usize,
    /// Access units the decoder rejected.
    pub decode_errors: usize,
    /// Frames whose watermark score passed the threshold.
    pub watermarked_frames: usize,
    /// Access units carrying facerelay's SEI mark.
    pub sei_frames: usize,
    /// The server id of the first SEI mark.
    pub sei_server: Option<String>,
    /// The highest frame score, and the threshold.
    pub best_score: f32,
    pub threshold: f32,
    /// Every frame's score, in order.
    pub scores: Vec<f32>,
    /// What an image file's metadata (XMP) declares about its source, if anything.
    pub declared: Option<xmp::Declared>,
    /// The verdict.
    pub swapped: bool,
}

impl Report {
    fn new(kind: &'static str) -> Self {
        Self {
            kind,
            frames: 0,
            decode_errors: 0,
            watermarked_frames: 0,
            sei_frames: 0,
            sei_server: None,
            best_score: f32::NEG_INFINITY,
            threshold: watermark::THRESHOLD,
            scores: Vec::new(),
            declared: None,
            swapped: false,
        }
    }

    fn add_score(&mut self, s: f32) {
        self.frames += 1;
        self.best_score = self.best_score.max(s);
        if s > watermark::THRESHOLD {
            self.watermarked_frames += 1;
        }
        self.scores.push(s);
    }

    /// The text report.
    pub fn describe(&self, name: &str) -> String {
        let mut out = String::new();
        let what = match self.kind {
            "image" => "image".to_string(),
            k => format!(
                "{} video, {} frames decoded{}",
                k,
                self.frames,
                if self.decode_errors > 0 {
                    format!(
                        " ({} access units could not be decoded)",
                        self.decode_errors
                    )
                } else {
                    String::new()
                }
            ),
        };
        out += &format!("{name}: {what}\n");
        out += &format!(
            "  watermark: {} (best score {:.1}, threshold {:.1})\n",
            if self.kind == "image" {
                if self.watermarked_frames > 0 {
                    "found"
                } else {
                    "not found"
                }
                .to_string()
            } else {
                format!(
                    "found in {} of {} frames ({:.1} %)",
                    self.watermarked_frames,
                    self.frames,
                    100.0 * self.watermarked_frames as f64 / self.frames.max(1) as f64
                )
            },
            self.best_score,
            self.threshold
        );
        if self.kind == "image" {
            out += &match &self.declared {
                Some(d) => format!(
                    "  metadata (XMP): digital source type {}{}\n",
                    d.digital_source_type
                        .rsplit('/')
                        .next()
                        .unwrap_or(&d.digital_source_type),
                    d.creator_tool
                        .as_ref()
                        .map(|t| format!(", declared by {t}"))
                        .unwrap_or_default()
                ),
                None => "  metadata (XMP): no digital source type\n".into(),
            };
        } else {
            out += &match &self.sei_server {
                Some(server) => format!(
                    "  bitstream mark (SEI): in {} access units (server {server})\n",
                    self.sei_frames
                ),
                None => "  bitstream mark (SEI): none (not swapped, or re-encoded since)\n".into(),
            };
        }
        out += if self.swapped {
            "verdict: swapped by facerelay\n"
        } else {
            "verdict: no facerelay mark found\n"
        };
        out
    }
}

/// Checks a file's bytes.
pub fn verify_bytes(data: &[u8]) -> Result<Report, VerifyError> {
    match container::sniff(data) {
        Some(format) => verify_video(data, format),
        None => verify_image(data),
    }
}

fn verify_image(data: &[u8]) -> Result<Report, VerifyError> {
    let format = image::guess_format(data).map_err(|_| VerifyError::Unknown)?;
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(data), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(16_384);
    limits.max_image_height = Some(16_384);
    limits.max_alloc = Some(1 << 30);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| VerifyError::Image(e.to_string()))?
        .to_luma8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut report = Report::new("image");
    report.add_score(watermark::score(img.as_raw(), w, h, w));
    report.declared = xmp::read(data);
    // The metadata is a declaration anyone can strip or write: the verdict stays the mark's.
    report.swapped = report.watermarked_frames > 0;
    Ok(report)
}

fn verify_video(data: &[u8], format: Format) -> Result<Report, VerifyError> {
    let video = container::read(data, format)?;
    let mut report = Report::new(match format {
        Format::H264 => "h264",
        Format::Mp4 => "mp4",
        Format::Webm => "webm",
    });
    let mut maps = Vec::new();
    let mut decoder =
        VideoDecoder::new(MAX_PIXELS).map_err(|e| VerifyError::Image(e.to_string()))?;
    for unit in &video.units {
        if let Some(payload) = sei::find(unit) {
            report.sei_frames += 1;
            if report.sei_server.is_none() {
                report.sei_server = serde_json::from_slice::<serde_json::Value>(&payload)
                    .ok()
                    .and_then(|v| v.get("server")?.as_str().map(str::to_owned))
                    .or_else(|| Some("?".into()));
            }
        }
        match decoder.decode(unit) {
            Ok(Some(frame)) => maps.push(watermark::frame_map(&frame)),
            Ok(None) => {}
            Err(_) => report.decode_errors += 1,
        }
    }
    // Each frame is read with its neighbours (a video's frames carry the same mark).
    for s in watermark::video_scores(&maps) {
        report.add_score(s);
    }
    if report.frames == 0 && report.sei_frames == 0 {
        return Err(VerifyError::NothingDecoded(video.units.len()));
    }
    report.swapped = report.sei_frames > 0
        || (report.watermarked_frames >= MIN_MARKED_FRAMES
            && report.watermarked_frames as f64 >= MIN_MARKED_SHARE * report.frames as f64);
    Ok(report)
}

/// Checks a file.
pub fn verify_file(path: &Path) -> Result<Report, VerifyError> {
    let name = path.display().to_string();
    let io = |source| VerifyError::Io {
        path: name.clone(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_FILE_BYTES {
        return Err(VerifyError::TooLarge(name));
    }
    let data = std::fs::read(path).map_err(io)?;
    verify_bytes(&data)
}

/// The command: prints the report; `Ok(true)` when the file was swapped by facerelay.
pub fn run(args: &VerifyArgs) -> anyhow::Result<bool> {
    let report = verify_file(&args.file)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.describe(&args.file.display().to_string()));
    }
    Ok(report.swapped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{EncoderSettings, I420Frame, VideoEncoder};

    fn textured(seed: u32) -> I420Frame {
        let mut f = I420Frame::filled(640, 480, 0, 128, 128).unwrap();
        let (y, _, _) = f.planes_mut();
        for (i, p) in y.iter_mut().enumerate() {
            let (x, r) = ((i % 640) as u32, (i / 640) as u32);
            let n = (i as u32 + seed).wrapping_mul(2_654_435_761) >> 29;
            *p = (70 + x / 8 + r / 6 + n) as u8;
        }
        f
    }

    fn stream(marked: bool) -> Vec<u8> {
        let mut enc = VideoEncoder::new(EncoderSettings {
            bitrate_bps: 1_000_000,
            max_frame_rate: 30.0,
            keyframe_interval: 0,
        })
        .unwrap();
        let mut out = Vec::new();
        for i in 0..12 {
            let mut f = textured(i);
            if marked {
                watermark::embed(&mut f, &[[200, 100, 440, 420]], watermark::AMPLITUDE);
            }
            let mut au = enc.encode(&f, i == 0).unwrap().data;
            if marked && i % 2 == 0 {
                au = sei::insert(&au, &sei::nal(&sei::swapped_payload()));
            }
            out.extend_from_slice(&au);
        }
        out
    }

    #[test]
    fn a_marked_stream_is_found_and_an_unmarked_one_is_not() {
        let r = verify_bytes(&stream(true)).unwrap();
        assert_eq!((r.kind, r.frames, r.sei_frames), ("h264", 12, 6));
        assert_eq!(r.watermarked_frames, 12, "{:?}", r.scores);
        assert!(r.swapped);
        assert_eq!(r.sei_server.as_deref(), Some(sei::server_id()));
        let r = verify_bytes(&stream(false)).unwrap();
        assert_eq!((r.frames, r.sei_frames, r.watermarked_frames), (12, 0, 0));
        assert!(!r.swapped);
        assert!(r.describe("x").contains("no facerelay mark"));
    }

    #[test]
    fn garbage_is_a_clear_error() {
        assert!(matches!(
            verify_bytes(b"not a video"),
            Err(VerifyError::Unknown)
        ));
        let mut junk = vec![0, 0, 0, 1];
        junk.extend(std::iter::repeat_n(0x41u8, 500));
        assert!(matches!(
            verify_bytes(&junk),
            Err(VerifyError::NothingDecoded(1))
        ));
        assert!(matches!(
            verify_bytes(&[0x89, b'P', b'N', b'G', 13, 10, 26, 10, 0]),
            Err(VerifyError::Image(_))
        ));
    }
}
