//! Points, affine maps, the least-squares similarity transform onto the ArcFace template, and
//! the detector's letterbox.
//!
//! Coordinates follow OpenCV and insightface: pixel (x, y) has its centre at integer (x, y).

/// A 2-D point in pixels.
pub type Point = [f32; 2];

/// The ArcFace five-point template at 112 px: left eye, right eye, nose tip, left and right
/// mouth corners (insightface `face_align.arcface_dst`).
pub const ARCFACE_112: [Point; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// The template for a square crop of `size` px: scaled from 112, and for sizes that are a
/// multiple of 128 (the swapper's crop) scaled from 128 with the 112 template shifted 8 px in x
/// (insightface `estimate_norm`).
pub fn arcface_template(size: u32) -> [Point; 5] {
    let (ratio, shift) = if size % 112 == 0 {
        (size as f32 / 112.0, 0.0)
    } else {
        (size as f32 / 128.0, 8.0 * size as f32 / 128.0)
    };
    ARCFACE_112.map(|[x, y]| [x * ratio + shift, y * ratio])
}

/// An affine map `[x', y'] = [[a, b, c], [d, e, f]] · [x, y, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine(pub [[f64; 3]; 2]);

impl Affine {
    pub fn apply(&self, [x, y]: Point) -> Point {
        let m = &self.0;
        let (x, y) = (f64::from(x), f64::from(y));
        [
            (m[0][0] * x + m[0][1] * y + m[0][2]) as f32,
            (m[1][0] * x + m[1][1] * y + m[1][2]) as f32,
        ]
    }

    /// The inverse map, or `None` when the map is singular.
    pub fn invert(&self) -> Option<Affine> {
        let [[a, b, c], [d, e, f]] = self.0;
        let det = a * e - b * d;
        if !det.is_finite() || det.abs() < 1e-12 {
            return None;
        }
        let (ia, ib, id, ie) = (e / det, -b / det, -d / det, a / det);
        Some(Affine([
            [ia, ib, -(ia * c + ib * f)],
            [id, ie, -(id * c + ie * f)],
        ]))
    }

    /// Scale factor of a similarity transform (length of the first column).
    pub fn scale(&self) -> f64 {
        self.0[0][0].hypot(self.0[1][0])
    }
}

/// The least-squares similarity transform (rotation, uniform scale, translation; no reflection)
/// mapping `src` onto `dst`: Umeyama's estimate, which in 2-D has this closed form. It is what
/// insightface gets from scikit-image's `SimilarityTransform.estimate`. `None` for degenerate
/// input (all points equal, or non-finite).
pub fn similarity(src: &[Point], dst: &[Point]) -> Option<Affine> {
    if src.len() != dst.len() || src.is_empty() {
        return None;
    }
    let n = src.len() as f64;
    let mean = |pts: &[Point]| {
        let (sx, sy) = pts.iter().fold((0.0, 0.0), |(sx, sy), p| {
            (sx + f64::from(p[0]), sy + f64::from(p[1]))
        });
        (sx / n, sy / n)
    };
    let (msx, msy) = mean(src);
    let (mdx, mdy) = mean(dst);
    // With centred points, the optimum rotation-and-scale [[a, -b], [b, a]] is
    // a = Σ(s·d) / Σ|s|², b = Σ(s×d) / Σ|s|².
    let (mut dot, mut cross, mut norm) = (0.0, 0.0, 0.0);
    for (s, d) in src.iter().zip(dst) {
        let (sx, sy) = (f64::from(s[0]) - msx, f64::from(s[1]) - msy);
        let (dx, dy) = (f64::from(d[0]) - mdx, f64::from(d[1]) - mdy);
        dot += sx * dx + sy * dy;
        cross += sx * dy - sy * dx;
        norm += sx * sx + sy * sy;
    }
    if !(norm.is_finite() && dot.is_finite() && cross.is_finite()) || norm < 1e-9 {
        return None;
    }
    let (a, b) = (dot / norm, cross / norm);
    Some(Affine([
        [a, -b, mdx - (a * msx - b * msy)],
        [b, a, mdy - (b * msx + a * msy)],
    ]))
}

/// How a frame is fitted into the detector's square input: scaled to fit, kept at the top left,
/// padded bottom and right.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Side of the square input.
    pub size: u32,
    /// Frame size.
    pub frame_w: u32,
    pub frame_h: u32,
    /// Size of the scaled frame inside the square.
    pub scaled_w: u32,
    pub scaled_h: u32,
}

impl Letterbox {
    pub fn new(frame_w: u32, frame_h: u32, size: u32) -> Self {
        let scale = (size as f64 / frame_w.max(1) as f64).min(size as f64 / frame_h.max(1) as f64);
        let fit = |v: u32| ((v as f64 * scale).round() as u32).clamp(1, size);
        Self {
            size,
            frame_w,
            frame_h,
            scaled_w: fit(frame_w),
            scaled_h: fit(frame_h),
        }
    }

    /// Horizontal and vertical scale, letterbox pixels per frame pixel.
    pub fn scale(&self) -> (f64, f64) {
        (
            self.scaled_w as f64 / self.frame_w as f64,
            self.scaled_h as f64 / self.frame_h as f64,
        )
    }

    /// The frame position of a point the detector reports in letterbox pixels: `x / s`.
    ///
    /// The trained SCRFD detector reports positions on that scale, not on the pixel-centre
    /// aligned one its input is resampled with: measured on the packaged photos shrunk k
    /// times, mapping back with `x / s` leaves no error that grows with k, while
    /// `(x + 0.5) / s − 0.5` drifts by 0.5·(k − 1) px (docs/coordinates.md,
    /// tools/coordinate_study.py).
    pub fn to_frame(&self, [x, y]: Point) -> Point {
        let (sx, sy) = self.scale();
        [(f64::from(x) / sx) as f32, (f64::from(y) / sy) as f32]
    }

    /// The letterbox position of a frame point (inverse of [`Letterbox::to_frame`]).
    pub fn to_letterbox(&self, [x, y]: Point) -> Point {
        let (sx, sy) = self.scale();
        [(f64::from(x) * sx) as f32, (f64::from(y) * sy) as f32]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    fn assert_affine(got: &Affine, want: &[[f64; 3]; 2], tol: f64) {
        let pairs = got.0.iter().flatten().zip(want.iter().flatten());
        for (g, w) in pairs {
            assert!(close(*g, *w, tol), "{:?} vs {want:?}", got.0);
        }
    }

    /// Five detector keypoints of a tilted face and the transform scikit-image computes for
    /// them. Reference values from scikit-image 0.26.0 (Python 3.11, numpy 2.4.6):
    ///
    /// ```python
    /// from skimage.transform import SimilarityTransform
    /// src = np.array([[367.1, 213.5], [431.9, 220.0], [399.5, 249.5],
    ///                 [370.2, 287.3], [426.5, 290.1]])
    /// dst = ARCFACE_112 as an array; for 128 px, dst[:, 0] += 8
    /// t = SimilarityTransform(); t.estimate(src, dst)
    /// t.params[:2]
    /// ```
    #[test]
    fn similarity_matches_scikit_image() {
        let src: [Point; 5] = [
            [367.1, 213.5],
            [431.9, 220.0],
            [399.5, 249.5],
            [370.2, 287.3],
            [426.5, 290.1],
        ];
        let m = similarity(&src, &ARCFACE_112).unwrap();
        let expected_112 = [
            [0.5496646241, 0.0257873918, -169.8124973388],
            [-0.0257873918, 0.5496646241, -56.3684776237],
        ];
        let m128 = similarity(&src, &arcface_template(128)).unwrap();
        let expected_128 = [
            [0.5496646241, 0.0257873918, -161.8124973388],
            [-0.0257873918, 0.5496646241, -56.3684776237],
        ];
        assert_affine(&m, &expected_112, 1e-4);
        assert_affine(&m128, &expected_128, 1e-4);
    }

    #[test]
    fn similarity_recovers_an_exact_transform() {
        // dst = 2·R(30°)·src + (5, -3): computed by hand.
        let (c, s) = (3f64.sqrt(), 1.0); // 2cos30, 2sin30
        let src: [Point; 3] = [[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]];
        let dst: Vec<Point> = src
            .iter()
            .map(|p| {
                let (x, y) = (f64::from(p[0]), f64::from(p[1]));
                [(c * x - s * y + 5.0) as f32, (s * x + c * y - 3.0) as f32]
            })
            .collect();
        let m = similarity(&src, &dst).unwrap();
        assert_affine(&m, &[[c, -s, 5.0], [s, c, -3.0]], 1e-5);
        assert!(close(m.scale(), 2.0, 1e-6));
        let inv = m.invert().unwrap();
        let back = inv.apply(m.apply([7.0, -2.0]));
        assert!(close(back[0] as f64, 7.0, 1e-4) && close(back[1] as f64, -2.0, 1e-4));
    }

    #[test]
    fn degenerate_points_give_none() {
        assert!(similarity(&[[1.0, 1.0]; 5], &ARCFACE_112).is_none());
        assert!(similarity(&[[f32::NAN, 0.0]; 5], &ARCFACE_112).is_none());
        assert!(similarity(&[], &[]).is_none());
        assert!(Affine([[0.0; 3]; 2]).invert().is_none());
    }

    #[test]
    fn template_at_128_is_shifted_8_px() {
        let t = arcface_template(128);
        assert_eq!(t[0], [46.2946, 51.6963]);
        assert_eq!(arcface_template(112), ARCFACE_112);
        let t224 = arcface_template(224);
        assert!(close(t224[2][0] as f64, 112.0504, 1e-3));
    }

    #[test]
    fn letterbox_scale_and_inverse() {
        // 1280x720 into 640: scale 0.5, 640x360, padded below.
        let lb = Letterbox::new(1280, 720, 640);
        assert_eq!((lb.scaled_w, lb.scaled_h), (640, 360));
        assert_eq!(lb.scale(), (0.5, 0.5));
        // Detector positions scale by 1/s (the convention the trained detector fits).
        assert_eq!(lb.to_frame([10.0, 0.0]), [20.0, 0.0]);
        assert_eq!(lb.to_letterbox([20.0, 0.0]), [10.0, 0.0]);
        // Portrait 480x640: scale 1, no resize.
        let lb = Letterbox::new(480, 640, 640);
        assert_eq!((lb.scaled_w, lb.scaled_h), (480, 640));
        assert_eq!(lb.to_frame([123.0, 456.0]), [123.0, 456.0]);
        // 320x200 is scaled up by 2 (to 640x400).
        let lb = Letterbox::new(320, 200, 640);
        assert_eq!((lb.scaled_w, lb.scaled_h), (640, 400));
        assert_eq!(lb.to_frame([1.0, 0.5]), [0.5, 0.25]);
    }
}
