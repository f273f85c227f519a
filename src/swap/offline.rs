//! Offline pictures (`facerelay swap`): a picture file swapped and written disclosed like a live
//! frame: the watermark on the swapped faces, the "FACE SWAPPED" label, and the file's own
//! metadata declaring it a composite with synthetic parts ([`crate::media::xmp`]).

use std::path::Path;

use image::RgbImage;

use super::{color, live, load_image, PictureEngine, Selection, SwapError, SwapReport};
use crate::media::I420Frame;

/// `facerelay swap`: puts the face of `face` onto the faces of `input`, writes `output`.
/// Pixels the swap did not touch are copied from the input unchanged (no colour round trip).
pub fn swap_image_files(
    engine: &mut PictureEngine,
    face: &Path,
    input: &Path,
    output: &Path,
    selection: &Selection,
) -> Result<SwapReport, SwapError> {
    let config = engine.config().clone();
    let source_photo = load_image(face, &config)?;
    let source = engine.source_face(&source_photo).map_err(|e| match e {
        SwapError::NoSourceFace(_) => SwapError::NoSourceFace(Some(face.display().to_string())),
        other => other,
    })?;
    let target = load_image(input, &config)?;
    let before = color::rgb_to_i420(&target)?;
    let mut frame = before.clone();
    let report = engine.swap_frame(&mut frame, &source, selection)?;
    if report.detected.is_empty() {
        return Err(SwapError::NoTargetFace(input.display().to_string()));
    }
    let swapped = !report.swapped.is_empty();
    if swapped {
        // Disclosed as a live frame is: the watermark on the faces, the label (`swap.watermark`,
        // `swap.label`).
        if config.watermark {
            let boxes: Vec<[u32; 4]> = report.swapped.iter().map(|s| s.paste_box).collect();
            crate::media::watermark::embed(&mut frame, &boxes, crate::media::watermark::AMPLITUDE);
        }
        if config.label {
            live::draw_label(&mut frame);
        }
    }
    let out = compose(&target, &before, &frame);
    write_disclosed(&out, output, swapped)?;
    Ok(report)
}

/// Writes `picture` to `path` in the format its extension names; a swapped one declares itself
/// in its metadata too (XMP, in PNG and JPEG; WebP files carry the watermark and label only).
fn write_disclosed(picture: &RgbImage, path: &Path, swapped: bool) -> Result<(), SwapError> {
    let failed = |message: String| SwapError::Image {
        path: path.display().to_string(),
        message,
    };
    let format =
        image::ImageFormat::from_path(path).map_err(|e| failed(format!("cannot write: {e}")))?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    picture
        .write_to(&mut bytes, format)
        .map_err(|e| failed(format!("cannot write: {e}")))?;
    let mut bytes = bytes.into_inner();
    if swapped {
        let packet = crate::media::xmp::packet(std::time::SystemTime::now());
        if let Some(declared) = crate::media::xmp::insert(&bytes, &packet) {
            bytes = declared;
        }
    }
    std::fs::write(path, bytes).map_err(|e| failed(format!("cannot write: {e}")))
}

/// The input picture with only the pixels whose Y, U or V the swap changed taken from the
/// swapped frame: everything else stays bit-identical to the input.
pub fn compose(input: &RgbImage, before: &I420Frame, after: &I420Frame) -> RgbImage {
    let mut out = input.clone();
    let swapped = color::i420_to_rgb(after, input.width(), input.height());
    let (w, cw) = (before.width() as usize, before.width() as usize / 2);
    for (x, y, px) in out.enumerate_pixels_mut() {
        let (x, y) = (x as usize, y as usize);
        let (l, c) = (y * w + x, (y / 2) * cw + x / 2);
        if before.y()[l] != after.y()[l]
            || before.u()[c] != after.u()[c]
            || before.v()[c] != after.v()[c]
        {
            *px = *swapped.get_pixel(x as u32, y as u32);
        }
    }
    out
}
