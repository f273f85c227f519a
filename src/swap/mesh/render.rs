//! The mesh swap's image work: the source face kept from the photo, the piecewise-affine warp
//! of it onto the live mesh (one affine map per mesh triangle), the feathered face-oval mask
//! with the eyes and the open mouth cut out, colour matching, and the blend. Everything stays
//! inside the face's box and in the frame's own Y/U/V planes.
//!
//! Colour matching moves the warped source's mean and spread in each of Y, U and V to the
//! target face's (measured inside the mask, every frame, smoothed over time). YCbCr keeps
//! brightness apart from colour, which is what a statistics transfer needs, and it is the
//! frame's own space, so no pixel is converted twice.

use super::topology::Topology;
use super::{bounds, LANDMARKS};
use crate::media::I420Frame;
use crate::swap::color::{bilinear, Planes};
use crate::swap::geometry::Point;
use crate::swap::SwapError;

/// An eye or mouth counts as open when its outline's area is more than this fraction of its
/// width squared (a closed one is a thin sliver).
pub(crate) const EYE_OPEN: f32 = 0.06;
pub(crate) const MOUTH_OPEN: f32 = 0.04;

/// Longest side of the kept source face, pixels: more detail than a live face of 640×480
/// shows, and a bounded cost per source.
const SOURCE_SIDE: f32 = 384.0;
/// Margin around the source landmarks kept with the face, as a fraction of its size.
const SOURCE_MARGIN: f32 = 0.1;

/// The source face: its region of the photo (I420, at most 384 px a side) and its landmarks
/// in that region's pixels. Kept in memory for the session only.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshSource {
    pub frame: I420Frame,
    pub points: Vec<Point>,
}

impl MeshSource {
    /// Cuts the face described by `points` (landmarks in `photo` pixels) out of the photo.
    pub fn new(photo: &I420Frame, points: &[Point]) -> Result<Self, SwapError> {
        if points.len() != LANDMARKS {
            return Err(SwapError::ModelOutput(
                "a source mesh needs 468 landmarks".into(),
            ));
        }
        let [x0, y0, x1, y1] = bounds(points);
        let margin = SOURCE_MARGIN * (x1 - x0).max(y1 - y0);
        let (x0, y0) = (x0 - margin, y0 - margin);
        let (fw, fh) = (x1 + margin - x0, y1 + margin - y0);
        if !(fw > 4.0 && fh > 4.0) {
            return Err(SwapError::ModelOutput("degenerate source mesh".into()));
        }
        let scale = (SOURCE_SIDE / fw.max(fh)).min(1.0);
        let even = |v: f32| ((v * scale).ceil() as u32 + 1) & !1;
        let (w, h) = (even(fw).max(2), even(fh).max(2));
        let mut frame = I420Frame::filled(w, h, 16, 128, 128)?;
        let planes = Planes::of(photo);
        let inv = 1.0 / scale;
        {
            let (yp, up, vp) = frame.planes_mut();
            let (pw, ph) = (planes.width, planes.height);
            for y in 0..h as usize {
                for x in 0..w as usize {
                    let (sx, sy) = (x0 + x as f32 * inv, y0 + y as f32 * inv);
                    yp[y * w as usize + x] = bilinear(planes.y, pw, pw, ph, sx, sy).round() as u8;
                }
            }
            let (cw, ch) = (pw / 2, ph / 2);
            for j in 0..h as usize / 2 {
                for i in 0..w as usize / 2 {
                    // Chroma sample centres in luma pixels, into the photo's chroma grid.
                    let lx = x0 + (2.0 * i as f32 + 0.5) * inv;
                    let ly = y0 + (2.0 * j as f32 + 0.5) * inv;
                    let (cx, cy) = ((lx - 0.5) / 2.0, (ly - 0.5) / 2.0);
                    let k = j * w as usize / 2 + i;
                    up[k] = bilinear(planes.u, cw, cw, ch, cx, cy).round() as u8;
                    vp[k] = bilinear(planes.v, cw, cw, ch, cx, cy).round() as u8;
                }
            }
        }
        let points = points
            .iter()
            .map(|p| [(p[0] - x0) * scale, (p[1] - y0) * scale])
            .collect();
        Ok(Self { frame, points })
    }
}

/// The mesh swap's settings (`[swap]` keys).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenderSettings {
    /// Width of the mask's soft edge, as a fraction of the face's width.
    pub feather: f32,
    /// Weight of the newest frame in the smoothed colour statistics, (0, 1].
    pub colour_smoothing: f32,
    /// Match the source's colour to the target's skin.
    pub colour_match: bool,
    /// Keep the target's own eyes and open mouth.
    pub keep_eyes_mouth: bool,
}

impl Default for RenderSettings {
    fn default() -> Self {
        Self {
            feather: 0.06,
            colour_smoothing: 0.3,
            colour_match: true,
            keep_eyes_mouth: true,
        }
    }
}

/// Mean and standard deviation of Y, U, V.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stats {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// A face's colour statistics, source and target, smoothed across frames (one per track).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ColourState {
    smoothed: Option<(Stats, Stats)>,
}

/// Reusable buffers of [`render`].
#[derive(Debug, Default)]
pub struct RenderScratch {
    /// Source position of each box pixel (NaN where no triangle covers it).
    map: Vec<Point>,
    alpha: Vec<f32>,
    tmp: Vec<f32>,
}

/// Swaps one face: `target` are the live landmarks in frame pixels. Returns the frame box that
/// was written (`[x0, y0, x1, y1)`, even), or `None` when the face misses the frame.
pub fn render(
    frame: &mut I420Frame,
    target: &[Point],
    source: &MeshSource,
    topo: &Topology,
    settings: &RenderSettings,
    colour: &mut ColourState,
    s: &mut RenderScratch,
) -> Option<[u32; 4]> {
    if target.len() != LANDMARKS || source.points.len() != LANDMARKS {
        return None;
    }
    let oval: Vec<Point> = topo.face_oval.iter().map(|&i| target[i as usize]).collect();
    let bx = face_box(&oval, frame.width(), frame.height())?;
    let [x0, y0, x1, y1] = bx.map(|v| v as usize);
    let (w, h) = (x1 - x0, y1 - y0);
    let local = |p: Point| [p[0] - x0 as f32, p[1] - y0 as f32];

    // 1. Where each box pixel comes from in the source, triangle by triangle.
    s.map.clear();
    s.map.resize(w * h, [f32::NAN; 2]);
    for t in &topo.triangles {
        let tt = t.map(|i| local(target[i as usize]));
        let ss = t.map(|i| source.points[i as usize]);
        fill_triangle(&mut s.map, w, h, tt, ss);
    }

    // 2. The mask: the face oval, less the eyes and the open mouth, feathered inwards.
    s.alpha.clear();
    s.alpha.resize(w * h, 0.0);
    let oval_local: Vec<Point> = oval.iter().map(|&p| local(p)).collect();
    fill_polygon(&mut s.alpha, w, h, &oval_local, 1.0);
    let face_w = {
        let b = bounds(&oval_local);
        (b[2] - b[0]).max(1.0)
    };
    if settings.keep_eyes_mouth {
        for (outline, open_at) in [
            (&topo.left_eye, EYE_OPEN),
            (&topo.right_eye, EYE_OPEN),
            (&topo.lips_inner, MOUTH_OPEN),
        ] {
            let poly: Vec<Point> = outline.iter().map(|&i| local(target[i as usize])).collect();
            let b = bounds(&poly);
            let width = (b[2] - b[0]).max(1.0);
            if polygon_area(&poly) / (width * width) > open_at {
                fill_polygon(&mut s.alpha, w, h, &poly, 0.0);
            }
        }
    }
    let radius = ((settings.feather * face_w / 2.0).round() as usize).max(1);
    box_blur(&mut s.alpha, &mut s.tmp, w, h, radius);
    box_blur(&mut s.alpha, &mut s.tmp, w, h, radius);
    for (a, m) in s.alpha.iter_mut().zip(&s.map) {
        // 0.5 on the outline after the blur: this puts the soft edge inside the face.
        *a = if m[0].is_nan() {
            0.0
        } else {
            (2.0 * *a - 1.0).clamp(0.0, 1.0)
        };
    }

    // 3. Colour statistics inside the mask, smoothed across frames.
    let src = Planes::of(&source.frame);
    let gain_offset = if settings.colour_match {
        let now = measure(frame, src, bx, &s.map, &s.alpha)?;
        let k = settings.colour_smoothing;
        let (ms, mt) = match colour.smoothed {
            Some((ps, pt)) => (mix(ps, now.0, k), mix(pt, now.1, k)),
            None => now,
        };
        colour.smoothed = Some((ms, mt));
        std::array::from_fn(|c| {
            // Luma keeps at least half its spread (the face's shading); chroma may lose all of
            // it, so a colour face on a grey-scale picture turns grey, not tinted.
            let least = if c == 0 { 0.5 } else { 0.0 };
            let g = (mt.std[c] / ms.std[c].max(1.0)).clamp(least, 2.0);
            (g, mt.mean[c] - g * ms.mean[c])
        })
    } else {
        [(1.0, 0.0); 3]
    };

    // 4. Blend into Y, then U and V (chroma at the centre of each 2×2 luma block).
    let fw = frame.width() as usize;
    let cw = fw / 2;
    let (sw, sh) = (src.width, src.height);
    let (scw, sch) = (sw / 2, sh / 2);
    let (yp, up, vp) = frame.planes_mut();
    let blend = |dst: &mut u8, v: f32, a: f32| {
        let d = f32::from(*dst);
        *dst = ((d + (v - d) * a).clamp(0.0, 255.0) + 0.5) as u8;
    };
    for y in 0..h {
        for x in 0..w {
            let a = s.alpha[y * w + x];
            if a > 0.0 {
                let [sx, sy] = s.map[y * w + x];
                let v = bilinear(src.y, sw, sw, sh, sx, sy);
                let (g, o) = gain_offset[0];
                blend(&mut yp[(y0 + y) * fw + x0 + x], g * v + o, a);
            }
        }
    }
    for j in 0..h / 2 {
        for i in 0..w / 2 {
            let at = |dx: usize, dy: usize| (2 * j + dy) * w + 2 * i + dx;
            let a = (s.alpha[at(0, 0)] + s.alpha[at(1, 0)] + s.alpha[at(0, 1)] + s.alpha[at(1, 1)])
                / 4.0;
            if a <= 0.0 {
                continue;
            }
            // The source position of the chroma sample's centre: the mean of its four luma
            // pixels' positions (all covered when their alphas are positive).
            let [ax, ay] = s.map[at(0, 0)];
            let [bx_, by] = s.map[at(1, 1)];
            if ax.is_nan() || bx_.is_nan() {
                continue;
            }
            let (cx, cy) = (
                ((ax + bx_) / 2.0 - 0.5) / 2.0,
                ((ay + by) / 2.0 - 0.5) / 2.0,
            );
            let k = (y0 / 2 + j) * cw + x0 / 2 + i;
            let (gu, ou) = gain_offset[1];
            let (gv, ov) = gain_offset[2];
            blend(
                &mut up[k],
                gu * bilinear(src.u, scw, scw, sch, cx, cy) + ou,
                a,
            );
            blend(
                &mut vp[k],
                gv * bilinear(src.v, scw, scw, sch, cx, cy) + ov,
                a,
            );
        }
    }
    Some(bx)
}

fn mix(a: Stats, b: Stats, k: f32) -> Stats {
    Stats {
        mean: std::array::from_fn(|c| a.mean[c] + k * (b.mean[c] - a.mean[c])),
        std: std::array::from_fn(|c| a.std[c] + k * (b.std[c] - a.std[c])),
    }
}

/// Source and target statistics of Y, U, V over the pixels well inside the mask (every
/// second pixel each way: plenty for a mean and a spread). `None` when too few pixels.
fn measure(
    frame: &I420Frame,
    src: Planes,
    bx: [u32; 4],
    map: &[Point],
    alpha: &[f32],
) -> Option<(Stats, Stats)> {
    let [x0, y0, x1, _] = bx.map(|v| v as usize);
    let w = x1 - x0;
    let fw = frame.width() as usize;
    let cw = fw / 2;
    let (sw, sh) = (src.width, src.height);
    let (scw, sch) = (sw / 2, sh / 2);
    let mut acc = [[0.0f64; 2]; 6];
    let mut n = 0.0f64;
    let h = map.len() / w.max(1);
    for y in (0..h.saturating_sub(1)).step_by(2) {
        for x in (0..w.saturating_sub(1)).step_by(2) {
            if alpha[y * w + x] < 0.99 {
                continue;
            }
            let [sx, sy] = map[y * w + x];
            let k = ((y0 + y) / 2) * cw + (x0 + x) / 2;
            let (cx, cy) = ((sx - 0.5) / 2.0, (sy - 0.5) / 2.0);
            let values = [
                bilinear(src.y, sw, sw, sh, sx, sy),
                bilinear(src.u, scw, scw, sch, cx, cy),
                bilinear(src.v, scw, scw, sch, cx, cy),
                f32::from(frame.y()[(y0 + y) * fw + x0 + x]),
                f32::from(frame.u()[k]),
                f32::from(frame.v()[k]),
            ];
            for (a, v) in acc.iter_mut().zip(values) {
                a[0] += f64::from(v);
                a[1] += f64::from(v) * f64::from(v);
            }
            n += 1.0;
        }
    }
    if n < 16.0 {
        return None;
    }
    let stat = |k: usize| {
        let mean = acc[k][0] / n;
        (
            (mean) as f32,
            ((acc[k][1] / n - mean * mean).max(0.0).sqrt()) as f32,
        )
    };
    let pack = |base: usize| {
        let s = [stat(base), stat(base + 1), stat(base + 2)];
        Stats {
            mean: s.map(|v| v.0),
            std: s.map(|v| v.1),
        }
    };
    Some((pack(0), pack(3)))
}

/// The box the face oval covers, a pixel wider, even, clipped to the frame.
fn face_box(oval: &[Point], width: u32, height: u32) -> Option<[u32; 4]> {
    let [x0, y0, x1, y1] = bounds(oval);
    if ![x0, y0, x1, y1].iter().all(|v| v.is_finite()) {
        return None;
    }
    let down = |v: f32, max: u32| ((v - 1.0).floor().clamp(0.0, max as f32) as u32) & !1;
    let up = |v: f32, max: u32| {
        let c = ((v + 2.0).ceil().clamp(0.0, max as f32)) as u32;
        (c + (c & 1)).min(max & !1)
    };
    let b = [
        down(x0, width),
        down(y0, height),
        up(x1, width),
        up(y1, height),
    ];
    (b[0] + 2 <= b[2] && b[1] + 2 <= b[3]).then_some(b)
}

/// Writes into `map` the source position of every box pixel inside triangle `t` (box-local
/// pixel indices), through the affine map that takes `t` onto the source triangle `s`.
fn fill_triangle(map: &mut [Point], w: usize, h: usize, t: [Point; 3], s: [Point; 3]) {
    let [a, b, c] = t;
    let det = (b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1]);
    if !det.is_finite() || det.abs() < 1e-4 {
        return;
    }
    let [tx0, ty0, tx1, ty1] = bounds(&t);
    let xs = (tx0.floor().max(0.0) as usize)..((tx1.ceil() + 1.0).clamp(0.0, w as f32) as usize);
    let ys = (ty0.floor().max(0.0) as usize)..((ty1.ceil() + 1.0).clamp(0.0, h as f32) as usize);
    let inv = 1.0 / det;
    // A hair of tolerance so that shared edges leave no gaps between triangles.
    let eps = -1e-4;
    for y in ys {
        let py = y as f32;
        for x in xs.clone() {
            let px = x as f32;
            // Barycentric weights of b and c.
            let l1 = ((px - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (py - a[1])) * inv;
            let l2 = ((b[0] - a[0]) * (py - a[1]) - (px - a[0]) * (b[1] - a[1])) * inv;
            let l0 = 1.0 - l1 - l2;
            if l0 >= eps && l1 >= eps && l2 >= eps {
                map[y * w + x] = [
                    l0 * s[0][0] + l1 * s[1][0] + l2 * s[2][0],
                    l0 * s[0][1] + l1 * s[1][1] + l2 * s[2][1],
                ];
            }
        }
    }
}

/// Sets the pixels whose centre is inside `poly` (even-odd rule) to `value`.
pub(crate) fn fill_polygon(buf: &mut [f32], w: usize, h: usize, poly: &[Point], value: f32) {
    let mut xs: Vec<f32> = Vec::with_capacity(8);
    for y in 0..h {
        let py = y as f32;
        xs.clear();
        for k in 0..poly.len() {
            let (p, q) = (poly[k], poly[(k + 1) % poly.len()]);
            if (p[1] <= py) != (q[1] <= py) {
                xs.push(p[0] + (py - p[1]) / (q[1] - p[1]) * (q[0] - p[0]));
            }
        }
        xs.sort_by(f32::total_cmp);
        for pair in xs.chunks_exact(2) {
            let from = pair[0].ceil().max(0.0) as usize;
            let to = pair[1].ceil().clamp(0.0, w as f32) as usize;
            for v in &mut buf[y * w + from.min(w)..y * w + to.max(from.min(w))] {
                *v = value;
            }
        }
    }
}

/// Area of a simple polygon (shoelace).
pub(crate) fn polygon_area(poly: &[Point]) -> f32 {
    let mut a = 0.0;
    for k in 0..poly.len() {
        let (p, q) = (poly[k], poly[(k + 1) % poly.len()]);
        a += p[0] * q[1] - q[0] * p[1];
    }
    (a / 2.0).abs()
}

/// Box blur of radius `r`, horizontal then vertical, edges clamped.
pub(crate) fn box_blur(buf: &mut [f32], tmp: &mut Vec<f32>, w: usize, h: usize, r: usize) {
    tmp.clear();
    tmp.resize(w * h, 0.0);
    let norm = 1.0 / (2 * r + 1) as f32;
    for y in 0..h {
        let row = &buf[y * w..y * w + w];
        let mut sum: f32 = (0..=2 * r)
            .map(|k| row[k.saturating_sub(r).min(w - 1)])
            .sum();
        for x in 0..w {
            tmp[y * w + x] = sum * norm;
            let add = row[(x + r + 1).min(w - 1)];
            let drop = row[x.saturating_sub(r)];
            sum += add - drop;
        }
    }
    for x in 0..w {
        let at = |y: usize| tmp[y * w + x];
        let mut sum: f32 = (0..=2 * r)
            .map(|k| at(k.saturating_sub(r).min(h - 1)))
            .sum();
        for y in 0..h {
            buf[y * w + x] = sum * norm;
            sum += at((y + r + 1).min(h - 1)) - at(y.saturating_sub(r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polygon_fill_and_area() {
        let sq = [[2.0, 2.0], [7.0, 2.0], [7.0, 7.0], [2.0, 7.0]];
        let mut buf = vec![0.0; 100];
        fill_polygon(&mut buf, 10, 10, &sq, 1.0);
        let n = buf.iter().filter(|&&v| v == 1.0).count();
        assert_eq!(n, 25, "pixel centres 2..=6 in each direction");
        assert_eq!(polygon_area(&sq), 25.0);
    }

    #[test]
    fn triangles_sharing_an_edge_leave_no_gap() {
        let (w, h) = (40, 40);
        let mut map = vec![[f32::NAN; 2]; w * h];
        let (a, b, c, d) = ([3.3, 4.1], [35.7, 5.2], [34.1, 36.9], [2.2, 33.3]);
        // Identity map from target to source.
        fill_triangle(&mut map, w, h, [a, b, c], [a, b, c]);
        fill_triangle(&mut map, w, h, [a, c, d], [a, c, d]);
        let quad = [a, b, c, d];
        let mut inside = vec![0.0; w * h];
        fill_polygon(&mut inside, w, h, &quad, 1.0);
        for (i, (m, v)) in map.iter().zip(&inside).enumerate() {
            if *v == 1.0 {
                assert!(!m[0].is_nan(), "pixel {i} inside the quad not covered");
                let (x, y) = ((i % w) as f32, (i / w) as f32);
                assert!((m[0] - x).abs() < 1e-3 && (m[1] - y).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn box_blur_keeps_flat_areas_and_softens_edges() {
        let (w, h) = (20, 10);
        let mut buf: Vec<f32> = (0..w * h)
            .map(|i| f32::from(u8::from(i % w >= 10)))
            .collect();
        let mut tmp = Vec::new();
        box_blur(&mut buf, &mut tmp, w, h, 2);
        assert!((buf[5 * w + 2] - 0.0).abs() < 1e-6 && (buf[5 * w + 17] - 1.0).abs() < 1e-6);
        assert!((buf[5 * w + 10] - 0.6).abs() < 1e-5, "{}", buf[5 * w + 10]);
    }
}
