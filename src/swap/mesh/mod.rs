//! The mesh tier: a real face swap with no deep model, from the packaged models alone.
//!
//! ```text
//! frame ─▶ BlazeFace (when no face is tracked, or every `swap.redetect_every` frames)
//!       ─▶ ROI per face: a rotated square around the eyes' line, 1.5× the face
//!       ─▶ face mesh (192² crop straight from Y/U/V) ─▶ 468 landmarks + presence
//!       ─▶ One Euro filter per coordinate (steady when still, quick when moving)
//!       ─▶ next frame's ROI from these landmarks (the detector is not needed again)
//!       ─▶ render: the source photo's face warped triangle by triangle onto the landmarks,
//!          colour-matched, blended through a feathered face-oval mask with the eyes and
//!          the mouth's inside cut out, in the face's box of the Y/U/V planes only
//! ```
//!
//! Modules: [`model`] (BlazeFace and face mesh contracts and decoding), [`topology`] (mesh
//! triangles and outlines), [`render`] (the source face, warp, mask, colour, blend).

pub mod engine;
pub mod model;
pub mod render;
pub mod topology;

use crate::swap::detect::Detection;
use crate::swap::geometry::{Affine, Point};

pub use engine::MeshEngine;
pub use model::{BlazeFace, FaceMesh, Mesh};
pub use render::{MeshSource, RenderScratch};
pub use topology::Topology;

/// Landmarks of the face mesh.
pub const LANDMARKS: usize = 468;

/// Landmarks used by name: outer eye corners (image left, image right), inner eye corners,
/// nose tip, mouth corners (image left, image right).
pub mod idx {
    pub const EYE_OUTER_L: usize = 33;
    pub const EYE_INNER_L: usize = 133;
    pub const EYE_OUTER_R: usize = 263;
    pub const EYE_INNER_R: usize = 362;
    pub const NOSE_TIP: usize = 1;
    pub const MOUTH_L: usize = 61;
    pub const MOUTH_R: usize = 291;
}

/// The ROI is this many times the face's size (room for the whole head as the mesh was trained).
const ROI_SCALE: f32 = 1.5;

/// A rotated square of the frame that the mesh model sees: centre (pixel indices), side and
/// the angle of its x axis (the eyes' line), radians.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Roi {
    pub cx: f32,
    pub cy: f32,
    pub side: f32,
    pub angle: f32,
}

impl Roi {
    /// From a detection: its box centre, the eyes' angle, 1.5× the box's longer side.
    pub fn from_detection(d: &Detection) -> Self {
        let [l, r] = [d.kps[0], d.kps[1]];
        Self {
            cx: (d.bbox[0] + d.bbox[2]) / 2.0,
            cy: (d.bbox[1] + d.bbox[3]) / 2.0,
            side: ROI_SCALE * (d.bbox[2] - d.bbox[0]).max(d.bbox[3] - d.bbox[1]),
            angle: (r[1] - l[1]).atan2(r[0] - l[0]),
        }
    }

    /// From the landmarks of the previous frame: the bounding box of the points in the frame
    /// rotated by the eyes' line, 1.5× its longer side.
    pub fn from_points(points: &[Point]) -> Option<Self> {
        let (l, r) = (points.get(idx::EYE_OUTER_L)?, points.get(idx::EYE_OUTER_R)?);
        let angle = (r[1] - l[1]).atan2(r[0] - l[0]);
        let (sin, cos) = angle.sin_cos();
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for p in points {
            // Into the rotated frame (rotation by −angle).
            let (u, v) = (cos * p[0] + sin * p[1], -sin * p[0] + cos * p[1]);
            x0 = x0.min(u);
            x1 = x1.max(u);
            y0 = y0.min(v);
            y1 = y1.max(v);
        }
        let (u, v) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
        let roi = Self {
            cx: cos * u - sin * v,
            cy: sin * u + cos * v,
            side: ROI_SCALE * (x1 - x0).max(y1 - y0),
            angle,
        };
        (roi.side.is_finite() && roi.side > 4.0 && roi.cx.is_finite() && roi.cy.is_finite())
            .then_some(roi)
    }

    /// The map from pixel indices of an `n`-pixel square crop of this ROI to frame pixel
    /// indices.
    pub fn crop_to_frame(&self, n: usize) -> Affine {
        let k = f64::from(self.side) / n as f64;
        let (sin, cos) = f64::from(self.angle).sin_cos();
        let half = 0.5 * k - f64::from(self.side) / 2.0;
        Affine([
            [
                cos * k,
                -sin * k,
                f64::from(self.cx) + cos * half - sin * half,
            ],
            [
                sin * k,
                cos * k,
                f64::from(self.cy) + sin * half + cos * half,
            ],
        ])
    }
}

/// The deep swapper's paste-back mask from the face's mesh, in the aligned crop's pixels
/// (`to_crop` maps frame pixels into the crop): the face oval, feathered inwards by `feather`
/// of its width, never past `square` (the crop's own eroded edge), less the inside of the
/// mouth when `mouth` is set and the mouth is open, so the wearer's own mouth shows.
pub fn crop_mask(
    square: &crate::swap::paste::Mask,
    to_crop: &Affine,
    points: &[Point],
    topo: &Topology,
    feather: f32,
    mouth: bool,
) -> crate::swap::paste::Mask {
    use render::{box_blur, fill_polygon, polygon_area};
    let size = square.size();
    let map = |ids: &[u16]| -> Vec<Point> {
        ids.iter()
            .map(|&i| to_crop.apply(points[i as usize]))
            .collect()
    };
    let mut alpha = vec![0.0; size * size];
    let oval = map(&topo.face_oval);
    fill_polygon(&mut alpha, size, size, &oval, 1.0);
    if mouth {
        let lips = map(&topo.lips_inner);
        let b = bounds(&lips);
        let width = (b[2] - b[0]).max(1.0);
        if polygon_area(&lips) / (width * width) > render::MOUTH_OPEN {
            fill_polygon(&mut alpha, size, size, &lips, 0.0);
        }
    }
    let width = {
        let b = bounds(&oval);
        (b[2] - b[0]).max(1.0)
    };
    let r = ((feather * width / 2.0).round() as usize).max(1);
    let mut tmp = Vec::new();
    box_blur(&mut alpha, &mut tmp, size, size, r);
    box_blur(&mut alpha, &mut tmp, size, size, r);
    for (a, s) in alpha.iter_mut().zip(square.alpha()) {
        *a = (2.0 * *a - 1.0).clamp(0.0, 1.0) * s;
    }
    crate::swap::paste::Mask::from_alpha(size, alpha)
}

/// The landmarks of a detected face: a mesh from the detection's ROI, then one more from the
/// ROI of the landmarks it gave (centred and turned like the crops the model was trained on),
/// as the live tracker's next frame would. `None` when the mesh says the crop holds no face
/// (presence below `presence`). `run` runs the mesh model on one ROI of the picture.
pub fn landmarks_of<E>(
    face: &Detection,
    presence: f32,
    mut run: impl FnMut(&Roi) -> Result<Mesh, E>,
) -> Result<Option<Vec<Point>>, E> {
    let mut roi = Roi::from_detection(face);
    let mut points = Vec::new();
    for _ in 0..2 {
        let mesh = run(&roi)?;
        if mesh.presence < presence {
            return Ok(None);
        }
        points = mesh.points;
        match Roi::from_points(&points) {
            Some(r) => roi = r,
            None => return Ok(None),
        }
    }
    Ok(Some(points))
}

/// Box `[x0, y0, x1, y1]` of a set of points.
pub fn bounds(points: &[Point]) -> [f32; 4] {
    points.iter().fold(
        [f32::MAX, f32::MAX, f32::MIN, f32::MIN],
        |[x0, y0, x1, y1], p| [x0.min(p[0]), y0.min(p[1]), x1.max(p[0]), y1.max(p[1])],
    )
}

/// The five keypoints of the deep models' alignment (eye centres, nose tip, mouth corners, in
/// image order), from a mesh.
pub fn five_points(points: &[Point]) -> [Point; 5] {
    let mid = |a: usize, b: usize| {
        [
            (points[a][0] + points[b][0]) / 2.0,
            (points[a][1] + points[b][1]) / 2.0,
        ]
    };
    [
        mid(idx::EYE_OUTER_L, idx::EYE_INNER_L),
        mid(idx::EYE_OUTER_R, idx::EYE_INNER_R),
        points[idx::NOSE_TIP],
        points[idx::MOUTH_L],
        points[idx::MOUTH_R],
    ]
}

/// A detection-shaped summary of a mesh: its landmarks' box and five points.
pub fn mesh_detection(points: &[Point], score: f32) -> Detection {
    Detection {
        score,
        bbox: bounds(points),
        kps: five_points(points),
    }
}

/// The One Euro filter's settings (`swap.filter_min_cutoff`, `swap.filter_beta`), in face
/// widths: the speed that opens the filter is measured relative to the face's size, so a face
/// far away and one close by are filtered alike.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FilterSettings {
    /// Cut-off frequency when still, Hz: lower is steadier.
    pub min_cutoff: f32,
    /// How fast the cut-off rises with speed (per face width per second): higher follows
    /// fast motion with less lag.
    pub beta: f32,
}

/// Cut-off of the speed estimate, Hz.
const D_CUTOFF: f32 = 1.0;

fn smoothing_factor(cutoff: f32, dt: f32) -> f32 {
    let tau = 1.0 / (2.0 * std::f32::consts::PI * cutoff);
    1.0 / (1.0 + tau / dt)
}

/// One Euro filters over a whole mesh (x and y of every landmark): a low-pass filter whose
/// cut-off rises with the speed of the point, so a still face does not jitter and a moving one
/// does not lag.
#[derive(Debug, Clone)]
pub struct MeshFilter {
    settings: FilterSettings,
    value: Vec<Point>,
    speed: Vec<Point>,
}

impl MeshFilter {
    pub fn new(settings: FilterSettings, first: &[Point]) -> Self {
        Self {
            settings,
            value: first.to_vec(),
            speed: vec![[0.0; 2]; first.len()],
        }
    }

    /// Filters the new raw landmarks, `dt` seconds after the previous ones; `scale` is the
    /// face's size in pixels. Returns the filtered landmarks.
    pub fn update(&mut self, raw: &[Point], dt: f32, scale: f32) -> &[Point] {
        if raw.len() != self.value.len() || !(dt > 0.0) || !(scale > 0.0) {
            self.value = raw.to_vec();
            self.speed = vec![[0.0; 2]; raw.len()];
            return &self.value;
        }
        let a_d = smoothing_factor(D_CUTOFF, dt);
        for ((v, s), r) in self.value.iter_mut().zip(&mut self.speed).zip(raw) {
            for k in 0..2 {
                let d = (r[k] - v[k]) / dt / scale;
                s[k] += a_d * (d - s[k]);
                let cutoff = self.settings.min_cutoff + self.settings.beta * s[k].abs();
                let a = smoothing_factor(cutoff, dt);
                v[k] += a * (r[k] - v[k]);
            }
        }
        &self.value
    }

    pub fn value(&self) -> &[Point] {
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(cx: f32, cy: f32, r: f32) -> Vec<Point> {
        (0..LANDMARKS)
            .map(|i| {
                let a = i as f32 * 0.1;
                [
                    cx + r * a.cos() * (1.0 + (i % 7) as f32 / 10.0),
                    cy + r * a.sin(),
                ]
            })
            .collect()
    }

    #[test]
    fn roi_from_points_covers_the_face_and_follows_its_tilt() {
        let mut pts = ring(300.0, 200.0, 50.0);
        pts[idx::EYE_OUTER_L] = [270.0, 190.0];
        pts[idx::EYE_OUTER_R] = [330.0, 190.0];
        let roi = Roi::from_points(&pts).unwrap();
        assert!(roi.angle.abs() < 1e-6);
        let b = bounds(&pts);
        assert!((roi.side - 1.5 * (b[2] - b[0]).max(b[3] - b[1])).abs() < 1e-3);
        // The crop's centre pixel pair straddles the ROI centre.
        let m = roi.crop_to_frame(192);
        let c = m.apply([95.5, 95.5]);
        assert!(
            (c[0] - roi.cx).abs() < 1e-3 && (c[1] - roi.cy).abs() < 1e-3,
            "{c:?}"
        );
        // Tilted 30°: the crop's x axis runs along the eyes.
        pts[idx::EYE_OUTER_R] = [270.0 + 60.0 * 0.866, 190.0 + 30.0];
        let roi = Roi::from_points(&pts).unwrap();
        assert!((roi.angle - 0.5236).abs() < 1e-3, "{}", roi.angle);
        let m = roi.crop_to_frame(192);
        let (p, q) = (m.apply([0.0, 0.0]), m.apply([1.0, 0.0]));
        assert!(((q[1] - p[1]).atan2(q[0] - p[0]) - roi.angle).abs() < 1e-4);
        assert!(Roi::from_points(&[[1.0, 1.0]; LANDMARKS]).is_none());
    }

    /// Deterministic noise in [-1, 1].
    fn noise(i: u32) -> f32 {
        let h = i.wrapping_mul(2_654_435_761).rotate_left(13) ^ 0x9e37_79b9;
        (h % 2001) as f32 / 1000.0 - 1.0
    }

    #[test]
    fn one_euro_steadies_a_still_face_and_follows_a_moving_one() {
        let s = FilterSettings {
            min_cutoff: 1.0,
            beta: 20.0,
        };
        let truth = [320.0f32, 240.0];
        let at =
            |i: u32, c: Point| vec![[c[0] + 2.0 * noise(2 * i), c[1] + 2.0 * noise(2 * i + 1)]];
        let mut f = MeshFilter::new(s, &at(0, truth));
        let (mut raw_sq, mut out_sq) = (0.0, 0.0);
        for i in 1..300u32 {
            let r = at(i, truth);
            let o = f.update(&r, 1.0 / 30.0, 150.0)[0];
            if i > 30 {
                raw_sq += (r[0][0] - truth[0]).powi(2) + (r[0][1] - truth[1]).powi(2);
                out_sq += (o[0] - truth[0]).powi(2) + (o[1] - truth[1]).powi(2);
            }
        }
        assert!(
            out_sq < 0.25 * raw_sq,
            "still: raw {raw_sq} filtered {out_sq}"
        );
        // A face moving 300 px/s (two face widths a second): the lag stays a few pixels.
        let mut worst = 0.0f32;
        for i in 0..60u32 {
            let c = [truth[0] + 10.0 * i as f32, truth[1]];
            let o = f.update(&[c], 1.0 / 30.0, 150.0)[0];
            if i > 10 {
                worst = worst.max((o[0] - c[0]).abs());
            }
        }
        assert!(worst < 12.0, "moving: lag {worst} px");
    }
}
