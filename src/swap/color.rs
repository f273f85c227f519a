//! Colour between I420 frames and the models' RGB tensors, one region at a time.
//!
//! Frames are BT.601 limited range (what WebRTC cameras and OpenH264 use). The real-time path
//! never converts a whole frame: the detector reads its letterbox straight from the planes,
//! crops are sampled straight from them, and paste-back writes Y, U and V directly. Whole-image
//! conversions ([`rgb_to_i420`], [`i420_to_rgb`]) exist for the offline `facerelay swap`.

use image::RgbImage;

use crate::media::I420Frame;

/// Y, U, V of one RGB colour (BT.601 limited range), unrounded.
pub fn rgb_to_yuv(r: f32, g: f32, b: f32) -> [f32; 3] {
    [
        16.0 + 0.256_788 * r + 0.504_129 * g + 0.097_906 * b,
        128.0 - 0.148_223 * r - 0.290_993 * g + 0.439_216 * b,
        128.0 + 0.439_216 * r - 0.367_788 * g - 0.071_427 * b,
    ]
}

/// R, G, B (0..255, unclamped) of one Y, U, V triple.
#[inline]
pub fn yuv_to_rgb(y: f32, u: f32, v: f32) -> [f32; 3] {
    let c = 1.164_383 * (y - 16.0);
    let (d, e) = (u - 128.0, v - 128.0);
    [
        c + 1.596_027 * e,
        c - 0.391_762 * d - 0.812_968 * e,
        c + 2.017_232 * d,
    ]
}

/// Read-only view of the three planes of a frame.
#[derive(Clone, Copy)]
pub struct Planes<'a> {
    pub y: &'a [u8],
    pub u: &'a [u8],
    pub v: &'a [u8],
    pub width: usize,
    pub height: usize,
}

impl<'a> Planes<'a> {
    pub fn of(frame: &'a I420Frame) -> Self {
        Self {
            y: frame.y(),
            u: frame.u(),
            v: frame.v(),
            width: frame.width() as usize,
            height: frame.height() as usize,
        }
    }

    /// Bilinear sample of Y, U and V at luma position (x, y), edges replicated. Chroma samples
    /// sit at the centre of each 2x2 luma block.
    #[inline]
    pub fn sample(&self, x: f32, y: f32) -> [f32; 3] {
        let (w, h) = (self.width, self.height);
        let luma = bilinear(self.y, w, w, h, x, y);
        let (cx, cy) = ((x - 0.5) * 0.5, (y - 0.5) * 0.5);
        let cw = w / 2;
        let u = bilinear(self.u, cw, cw, h / 2, cx, cy);
        let v = bilinear(self.v, cw, cw, h / 2, cx, cy);
        [luma, u, v]
    }
}

/// Bilinear sample of an 8-bit plane at (x, y), coordinates clamped to the plane (replicated
/// border). NaN coordinates land on the first pixel rather than panicking.
#[inline]
pub fn bilinear(plane: &[u8], stride: usize, w: usize, h: usize, x: f32, y: f32) -> f32 {
    // f32::max drops NaN, so a NaN coordinate becomes 0 instead of poisoning the result.
    let x = x.max(0.0).min((w - 1) as f32);
    let y = y.max(0.0).min((h - 1) as f32);
    let (x0, y0) = (x as usize, y as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let p = |xx: usize, yy: usize| f32::from(plane[yy * stride + xx]);
    let top = p(x0, y0) + (p(x1, y0) - p(x0, y0)) * fx;
    let bottom = p(x0, y1) + (p(x1, y1) - p(x0, y1)) * fx;
    top + (bottom - top) * fy
}

/// A bilinear tap into square f32 planes of one size: the position is resolved once and then
/// read from several planes (mask, Y, U, V) that share the geometry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tap {
    index: usize,
    dx: usize,
    dy: usize,
    fx: f32,
    fy: f32,
}

impl Tap {
    /// The tap at (x, y) in a `size`×`size` plane; `None` outside it (or for NaN).
    #[inline]
    pub fn new(size: usize, x: f32, y: f32) -> Option<Self> {
        let max = (size - 1) as f32;
        if !(x >= 0.0 && y >= 0.0 && x <= max && y <= max) {
            return None;
        }
        let (x0, y0) = (x as usize, y as usize);
        Some(Self {
            index: y0 * size + x0,
            dx: usize::from(x0 + 1 < size),
            dy: if y0 + 1 < size { size } else { 0 },
            fx: x - x0 as f32,
            fy: y - y0 as f32,
        })
    }

    /// The interpolated value of `plane` (which must be `size`×`size`).
    #[inline]
    pub fn sample(&self, plane: &[f32]) -> f32 {
        let i = self.index;
        let (p00, p10) = (plane[i], plane[i + self.dx]);
        let (p01, p11) = (plane[i + self.dy], plane[i + self.dy + self.dx]);
        let top = p00 + (p10 - p00) * self.fx;
        let bottom = p01 + (p11 - p01) * self.fx;
        top + (bottom - top) * self.fy
    }
}

/// Converts an RGB image to an I420 frame. Odd sizes are padded by one replicated column/row
/// (I420 needs even sizes); [`i420_to_rgb`] with the original size crops them off again.
pub fn rgb_to_i420(img: &RgbImage) -> Result<I420Frame, crate::media::FrameError> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (fw, fh) = (w + w % 2, h + h % 2);
    let mut frame = I420Frame::filled(fw as u32, fh as u32, 16, 128, 128)?;
    if w == 0 || h == 0 {
        return Ok(frame);
    }
    let px = |x: usize, y: usize| {
        let p = img.get_pixel(x.min(w - 1) as u32, y.min(h - 1) as u32).0;
        [f32::from(p[0]), f32::from(p[1]), f32::from(p[2])]
    };
    let (yp, up, vp) = frame.planes_mut();
    for y in 0..fh {
        for x in 0..fw {
            let [r, g, b] = px(x, y);
            yp[y * fw + x] = rgb_to_yuv(r, g, b)[0].round().clamp(0.0, 255.0) as u8;
        }
    }
    let cw = fw / 2;
    for cy in 0..fh / 2 {
        for cx in 0..cw {
            let mut sum = [0.0f32; 3];
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let p = px(2 * cx + dx, 2 * cy + dy);
                for k in 0..3 {
                    sum[k] += p[k] / 4.0;
                }
            }
            let [_, u, v] = rgb_to_yuv(sum[0], sum[1], sum[2]);
            up[cy * cw + cx] = u.round().clamp(0.0, 255.0) as u8;
            vp[cy * cw + cx] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    Ok(frame)
}

/// Converts an I420 frame to RGB, cropped to `width`×`height` (at most the frame's size).
pub fn i420_to_rgb(frame: &I420Frame, width: u32, height: u32) -> RgbImage {
    let p = Planes::of(frame);
    let (w, h) = (width.min(frame.width()), height.min(frame.height()));
    let cw = p.width / 2;
    RgbImage::from_fn(w, h, |x, y| {
        let (x, y) = (x as usize, y as usize);
        let luma = f32::from(p.y[y * p.width + x]);
        let u = f32::from(p.u[(y / 2) * cw + x / 2]);
        let v = f32::from(p.v[(y / 2) * cw + x / 2]);
        let rgb = yuv_to_rgb(luma, u, v);
        image::Rgb(rgb.map(|c| c.round().clamp(0.0, 255.0) as u8))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bt601_reference_colours() {
        // Limited-range BT.601 reference values (ITU-R BT.601 / the 75 % bars' full-intensity
        // counterparts): white 235/128/128, black 16/128/128, red 81/90/240.
        let close = |a: [f32; 3], b: [f32; 3]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 0.6);
        assert!(close(
            rgb_to_yuv(255.0, 255.0, 255.0),
            [235.0, 128.0, 128.0]
        ));
        assert!(close(rgb_to_yuv(0.0, 0.0, 0.0), [16.0, 128.0, 128.0]));
        assert!(close(rgb_to_yuv(255.0, 0.0, 0.0), [81.5, 90.2, 240.0]));
        for rgb in [
            [255.0, 0.0, 0.0],
            [12.0, 200.0, 90.0],
            [128.0, 128.0, 128.0],
        ] {
            let [y, u, v] = rgb_to_yuv(rgb[0], rgb[1], rgb[2]);
            assert!(close(yuv_to_rgb(y, u, v), rgb), "{rgb:?}");
        }
    }

    #[test]
    fn round_trip_keeps_flat_colours_and_odd_sizes() {
        let img = RgbImage::from_pixel(5, 3, image::Rgb([200, 100, 50]));
        let frame = rgb_to_i420(&img).unwrap();
        assert_eq!((frame.width(), frame.height()), (6, 4));
        let back = i420_to_rgb(&frame, 5, 3);
        assert_eq!(back.dimensions(), (5, 3));
        for p in back.pixels() {
            for (a, b) in p.0.iter().zip([200u8, 100, 50]) {
                assert!(a.abs_diff(b) <= 2, "{p:?}");
            }
        }
    }

    #[test]
    fn bilinear_interpolates_and_clamps() {
        let plane = [0u8, 100, 200, 44];
        assert_eq!(bilinear(&plane, 2, 2, 2, 0.5, 0.0), 50.0);
        assert_eq!(bilinear(&plane, 2, 2, 2, 0.5, 0.5), 86.0);
        assert_eq!(bilinear(&plane, 2, 2, 2, -5.0, 9.0), 200.0);
        assert_eq!(bilinear(&plane, 2, 2, 2, f32::NAN, f32::NAN), 0.0);
        let tap = |x, y| Tap::new(2, x, y).map(|t| t.sample(&[1.0, 3.0, 5.0, 7.0]));
        assert_eq!(tap(1.0, 0.5), Some(5.0));
        assert_eq!(tap(0.5, 0.5), Some(4.0));
        assert_eq!(tap(1.5, 0.0), None);
        assert_eq!(tap(f32::NAN, 0.0), None);
    }
}
