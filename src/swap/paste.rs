//! The two warps around the swapper: the aligned crop sampled straight from the I420 planes,
//! and the paste-back of the swapped crop through a feathered mask into Y, U and V, touching
//! only the face's box in the frame: the bounding box of the aligned crop's four corners mapped
//! back into the frame (never a full-frame warp).

use super::color::{rgb_to_yuv, yuv_to_rgb, Planes, Tap};
use super::geometry::Affine;
use crate::media::I420Frame;

/// Samples a `size`×`size` crop from the frame: crop pixel (u, v) shows frame point
/// `crop_to_frame(u, v)`. Writes planar RGB, each channel `rgb·scale + offset`
/// (swapper: 1/255 and 0; ArcFace: 1/127.5 and −1). Edges are replicated.
pub fn warp_crop(
    planes: Planes,
    crop_to_frame: &Affine,
    size: usize,
    scale: f32,
    offset: f32,
    out: &mut [f32],
) {
    let plane = size * size;
    let [[a, b, c], [d, e, f]] = crop_to_frame.0;
    let (a, b, c, d, e, f) = (a as f32, b as f32, c as f32, d as f32, e as f32, f as f32);
    for v in 0..size {
        let (mut x, mut y) = (b * v as f32 + c, e * v as f32 + f);
        for u in 0..size {
            let [luma, cu, cv] = planes.sample(x, y);
            let rgb = yuv_to_rgb(luma, cu, cv);
            let i = v * size + u;
            for (k, value) in rgb.iter().enumerate() {
                out[k * plane + i] = value.clamp(0.0, 255.0) * scale + offset;
            }
            x += a;
            y += d;
        }
    }
}

/// A soft mask over the square crop: 1 inside, 0 at the border, with the border eroded by
/// `erode` px and the edge blurred with a Gaussian of `sigma` px. Built once.
#[derive(Debug, Clone)]
pub struct Mask {
    size: usize,
    alpha: Vec<f32>,
}

impl Mask {
    pub fn new(size: usize, erode: usize, sigma: f32) -> Self {
        let inside = |i: usize| i >= erode && i + erode < size;
        let mut alpha: Vec<f32> = (0..size * size)
            .map(|i| f32::from(u8::from(inside(i % size) && inside(i / size))))
            .collect();
        if sigma > 0.0 {
            let radius = (3.0 * sigma).ceil() as isize;
            let kernel: Vec<f32> = (-radius..=radius)
                .map(|k| (-(k * k) as f32 / (2.0 * sigma * sigma)).exp())
                .collect();
            let total: f32 = kernel.iter().sum();
            let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
            // Separable blur, zero outside the crop, so the edge stays at zero.
            for horizontal in [true, false] {
                let src = alpha.clone();
                for y in 0..size {
                    for x in 0..size {
                        let mut acc = 0.0;
                        for (j, w) in kernel.iter().enumerate() {
                            let o = j as isize - radius;
                            let (sx, sy) = if horizontal {
                                (x as isize + o, y as isize)
                            } else {
                                (x as isize, y as isize + o)
                            };
                            if sx >= 0 && sy >= 0 && (sx as usize) < size && (sy as usize) < size {
                                acc += w * src[sy as usize * size + sx as usize];
                            }
                        }
                        alpha[y * size + x] = acc;
                    }
                }
            }
        }
        // Below one 8-bit step the blend could not change a pixel anyway: make it exactly 0 so
        // the crop's border is provably untouched; likewise snap the inside to exactly 1.
        for a in &mut alpha {
            if *a < 1.0 / 255.0 {
                *a = 0.0;
            } else if *a > 1.0 - 1.0 / 255.0 {
                *a = 1.0;
            }
        }
        Self { size, alpha }
    }

    /// A mask of the given weights (`size`×`size`, row-major), snapped like [`Mask::new`].
    pub fn from_alpha(size: usize, mut alpha: Vec<f32>) -> Self {
        alpha.resize(size * size, 0.0);
        for a in &mut alpha {
            *a = if *a < 1.0 / 255.0 {
                0.0
            } else if *a > 1.0 - 1.0 / 255.0 {
                1.0
            } else {
                *a
            };
        }
        Self { size, alpha }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn alpha(&self) -> &[f32] {
        &self.alpha
    }
}

/// Reusable buffers for [`paste_back`].
#[derive(Debug, Default)]
pub struct PasteScratch {
    yuv: Vec<f32>,
}

/// Converts the swapped crop (planar RGB in [0,1]) to Y, U, V planes in `scratch`.
pub fn crop_to_yuv(crop_rgb: &[f32], size: usize, scratch: &mut PasteScratch) {
    let plane = size * size;
    scratch.yuv.resize(3 * plane, 0.0);
    let (ys, rest) = scratch.yuv.split_at_mut(plane);
    let (us, vs) = rest.split_at_mut(plane);
    for i in 0..plane {
        let px = |k: usize| crop_rgb[k * plane + i].clamp(0.0, 1.0) * 255.0;
        let [y, u, v] = rgb_to_yuv(px(0), px(1), px(2));
        ys[i] = y;
        us[i] = u;
        vs[i] = v;
    }
}

/// Moves the swapped crop's colour (in `scratch`, after [`crop_to_yuv`]) to the target crop's
/// (`target_rgb`, planar RGB in [0,1]): mean and spread of Y, U and V measured where the mask is
/// more than half on. Luma keeps at least half its spread; chroma may lose all of it.
pub fn match_colour(scratch: &mut PasteScratch, target_rgb: &[f32], mask: &Mask) {
    let plane = mask.size * mask.size;
    if scratch.yuv.len() != 3 * plane || target_rgb.len() != 3 * plane {
        return;
    }
    let mut acc = [[0.0f64; 2]; 6];
    let mut n = 0.0f64;
    for i in 0..plane {
        if mask.alpha[i] <= 0.5 {
            continue;
        }
        let px = |k: usize| target_rgb[k * plane + i].clamp(0.0, 1.0) * 255.0;
        let t = rgb_to_yuv(px(0), px(1), px(2));
        let s = [
            scratch.yuv[i],
            scratch.yuv[plane + i],
            scratch.yuv[2 * plane + i],
        ];
        for (a, v) in acc.iter_mut().zip(s.iter().chain(&t)) {
            a[0] += f64::from(*v);
            a[1] += f64::from(*v) * f64::from(*v);
        }
        n += 1.0;
    }
    if n < 16.0 {
        return;
    }
    let stat = |k: usize| {
        let mean = acc[k][0] / n;
        (mean, (acc[k][1] / n - mean * mean).max(0.0).sqrt())
    };
    for c in 0..3 {
        let ((ms, ss), (mt, st)) = (stat(c), stat(3 + c));
        let least = if c == 0 { 0.5 } else { 0.0 };
        let g = (st / ss.max(1.0)).clamp(least, 2.0) as f32;
        let o = (mt - f64::from(g) * ms) as f32;
        for v in &mut scratch.yuv[c * plane..(c + 1) * plane] {
            *v = g * *v + o;
        }
    }
}

/// The frame box a crop covers: the bounding box of its four corners mapped into the frame,
/// widened to even coordinates (so luma and chroma agree) and clipped to the frame.
/// `[x0, y0, x1, y1)`, or `None` when it misses the frame.
pub fn paste_box(crop_to_frame: &Affine, size: usize, width: u32, height: u32) -> Option<[u32; 4]> {
    let m = (size - 1) as f32;
    let corners = [[0.0, 0.0], [m, 0.0], [0.0, m], [m, m]].map(|p| crop_to_frame.apply(p));
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for [x, y] in corners {
        if !x.is_finite() || !y.is_finite() {
            return None;
        }
        x0 = x0.min(x);
        y0 = y0.min(y);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x1 < 0.0 || y1 < 0.0 || x0 > (width - 1) as f32 || y0 > (height - 1) as f32 {
        return None;
    }
    let even_down = |v: f32, max: u32| ((v.floor().max(0.0) as u32).min(max)) & !1;
    let even_up = |v: f32, max: u32| {
        let c = (v.ceil().max(0.0) as u64 + 1).min(u64::from(max)) as u32;
        (c + (c & 1)).min(max)
    };
    let b = [
        even_down(x0, width),
        even_down(y0, height),
        even_up(x1, width),
        even_up(y1, height),
    ];
    (b[0] < b[2] && b[1] < b[3]).then_some(b)
}

/// Blends the swapped crop (already in `scratch` via [`crop_to_yuv`]) into the frame through
/// the mask. `frame_to_crop` maps frame pixels into the crop. Only pixels inside `bx` (from
/// [`paste_box`]) are read or written.
pub fn paste_back(
    frame: &mut I420Frame,
    frame_to_crop: &Affine,
    mask: &Mask,
    scratch: &PasteScratch,
    bx: [u32; 4],
) {
    let size = mask.size;
    let plane = size * size;
    if scratch.yuv.len() != 3 * plane {
        return;
    }
    let (cy, rest) = scratch.yuv.split_at(plane);
    let (cu, cv) = rest.split_at(plane);
    let w = frame.width() as usize;
    let cw = w / 2;
    let [[a, b, c], [d, e, f]] = frame_to_crop.0;
    let (a, b, c, d, e, f) = (a as f32, b as f32, c as f32, d as f32, e as f32, f as f32);
    let [x0, y0, x1, y1] = bx.map(|v| v as usize);
    let (yp, up, vp) = frame.planes_mut();
    let blend = |dst: &mut u8, src: f32, alpha: f32| {
        let v = f32::from(*dst) + (src - f32::from(*dst)) * alpha;
        // +0.5 and truncation rounds (v >= 0 after the clamp); f32::round is a libm call on
        // baseline x86-64 and cost about a quarter of this loop.
        *dst = (v.clamp(0.0, 255.0) + 0.5) as u8;
    };
    for y in y0..y1 {
        let (mut u, mut v) = (
            a * x0 as f32 + b * y as f32 + c,
            d * x0 as f32 + e * y as f32 + f,
        );
        for x in x0..x1 {
            if let Some(tap) = Tap::new(size, u, v) {
                let alpha = tap.sample(&mask.alpha);
                if alpha > 0.0 {
                    blend(&mut yp[y * w + x], tap.sample(cy), alpha);
                }
            }
            u += a;
            v += d;
        }
    }
    // Chroma sample (i, j) sits at the centre of luma block (2i..2i+1, 2j..2j+1).
    for j in y0 / 2..y1 / 2 {
        let ly = 2.0 * j as f32 + 0.5;
        let lx = 2.0 * (x0 / 2) as f32 + 0.5;
        let (mut u, mut v) = (a * lx + b * ly + c, d * lx + e * ly + f);
        for i in x0 / 2..x1 / 2 {
            if let Some(tap) = Tap::new(size, u, v) {
                let alpha = tap.sample(&mask.alpha);
                if alpha > 0.0 {
                    blend(&mut up[j * cw + i], tap.sample(cu), alpha);
                    blend(&mut vp[j * cw + i], tap.sample(cv), alpha);
                }
            }
            u += 2.0 * a;
            v += 2.0 * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swap::geometry::{arcface_template, similarity};

    #[test]
    fn mask_is_zero_at_the_border_and_one_inside() {
        let m = Mask::new(128, 12, 4.0);
        let at = |x: usize, y: usize| m.alpha()[y * 128 + x];
        for i in 0..128 {
            for (x, y) in [(i, 0), (0, i), (127, i), (i, 127), (i, 1), (1, i), (126, i)] {
                assert_eq!(at(x, y), 0.0, "({x},{y})");
            }
        }
        assert_eq!(at(64, 64), 1.0);
        assert!(at(12, 64) > 0.2 && at(12, 64) < 0.8, "{}", at(12, 64));
    }

    /// Frame-to-crop map of a face at a known place: keypoints of a face of eye distance 60 px
    /// centred near (300, 200).
    fn face_map() -> Affine {
        let kps = [
            [270.0, 180.0],
            [330.0, 181.0],
            [300.0, 210.0],
            [275.0, 240.0],
            [325.0, 241.0],
        ];
        similarity(&kps, &arcface_template(128)).unwrap()
    }

    #[test]
    fn paste_back_changes_only_the_face_box() {
        let (w, h) = (640u32, 480u32);
        let mut frame = I420Frame::filled(w, h, 60, 110, 140).unwrap();
        // Texture so that "unchanged" means something.
        {
            let (yp, up, _) = frame.planes_mut();
            for (i, p) in yp.iter_mut().enumerate() {
                *p = (i * 7 % 200) as u8 + 20;
            }
            for (i, p) in up.iter_mut().enumerate() {
                *p = (i * 3 % 100) as u8 + 80;
            }
        }
        let before = frame.clone();
        let to_crop = face_map();
        let to_frame = to_crop.invert().unwrap();
        let bx = paste_box(&to_frame, 128, w, h).unwrap();
        // White crop: every pixel inside the mask moves toward Y=235.
        let crop = vec![1.0f32; 3 * 128 * 128];
        let mut scratch = PasteScratch::default();
        crop_to_yuv(&crop, 128, &mut scratch);
        paste_back(&mut frame, &to_crop, &Mask::new(128, 12, 4.0), &scratch, bx);

        let [x0, y0, x1, y1] = bx.map(|v| v as usize);
        assert!(
            x0 % 2 == 0 && y0 % 2 == 0 && x1 % 2 == 0 && y1 % 2 == 0,
            "{bx:?}"
        );
        let (wu, cw) = (w as usize, w as usize / 2);
        let mut changed_inside = 0;
        for y in 0..h as usize {
            for x in 0..wu {
                let (a, b) = (before.y()[y * wu + x], frame.y()[y * wu + x]);
                let inside = (x0..x1).contains(&x) && (y0..y1).contains(&y);
                if !inside {
                    assert_eq!(a, b, "luma ({x},{y}) outside {bx:?} changed");
                } else if a != b {
                    changed_inside += 1;
                }
            }
        }
        for j in 0..h as usize / 2 {
            for i in 0..cw {
                let inside = (x0 / 2..x1 / 2).contains(&i) && (y0 / 2..y1 / 2).contains(&j);
                if !inside {
                    assert_eq!(before.u()[j * cw + i], frame.u()[j * cw + i]);
                    assert_eq!(before.v()[j * cw + i], frame.v()[j * cw + i]);
                }
            }
        }
        // The face centre (nose) is fully replaced: Y of white.
        assert_eq!(frame.y()[210 * wu + 300], 235);
        assert!(changed_inside > 5000, "{changed_inside}");
    }

    #[test]
    fn paste_box_clips_and_misses() {
        let shift = |dx: f64| Affine([[1.0, 0.0, dx], [0.0, 1.0, 0.0]]);
        assert_eq!(
            paste_box(&shift(-64.0), 128, 100, 100),
            Some([0, 0, 64, 100])
        );
        assert_eq!(paste_box(&shift(-500.0), 128, 100, 100), None);
        assert_eq!(paste_box(&Affine([[f64::NAN; 3]; 2]), 128, 100, 100), None);
    }

    #[test]
    fn crop_warp_of_a_flat_frame_is_flat() {
        let frame = I420Frame::filled(64, 48, 235, 128, 128).unwrap();
        let mut out = vec![0.0; 3 * 16 * 16];
        let m = Affine([[2.0, 0.0, 10.0], [0.0, 2.0, 5.0]]);
        warp_crop(Planes::of(&frame), &m, 16, 1.0 / 255.0, 0.0, &mut out);
        assert!(
            out.iter().all(|v| (v - 1.0).abs() < 1e-3),
            "{:?}",
            &out[..4]
        );
    }
}
