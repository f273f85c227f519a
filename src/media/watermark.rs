//! The invisible watermark of swapped faces, and its detector (docs/marking.md has the
//! measured figures).
//!
//! **Embedding.** The picture is laid on a grid of square cells, each 1/120 of the frame's
//! height (4 px at 480 lines); every cell has a fixed pseudo-random sign ±1 (facerelay's
//! pattern, the same for every server). Inside an ellipse around each swapped face (1.6 times
//! the face's box, with a soft edge) the luma gets `a · sign(cell) · bump`, where the bump is a
//! raised cosine, 0 on the cell's edges and 1 in its middle, and `a` is [`AMPLITUDE`] where the
//! picture is smooth, up to [`TEXTURE_GAIN`] times that where it is textured (the detail hides
//! the change there, and the encoder spends bits on it).
//!
//! **Detection.** Each cell's bump-weighted mean minus the mean of its 8 neighbours (most of
//! the picture cancels) is weighted by how little texture surrounds the cell and correlated
//! with the cells' signs over windows of the grid: `z = Σ sign·r / √(Σ r²)`. In a frame without
//! the mark the signs are independent of the picture, so in every window `z` has mean 0 and
//! variance 1 (a sum of terms with random signs); the score is the largest `z` over windows of
//! several sizes, and a frame counts as marked above [`THRESHOLD`]. A video's frames are read
//! with their neighbours ([`video_scores`]): their residuals add up cell by cell before the
//! correlation, which keeps the same null distribution. Since the grid is tied to the frame's
//! height, a frame scaled as a whole (a recording at another resolution) is read on the same
//! grid; a crop, a mirror or a change of aspect moves the grid and the mark is lost.

use super::I420Frame;

/// Cells per frame height.
pub const CELLS_PER_HEIGHT: f32 = 120.0;

/// Peak luma change of the mark, in levels.
pub const AMPLITUDE: f32 = 4.0;

/// A frame whose score exceeds this is marked.
pub const THRESHOLD: f32 = 6.0;

/// Cells whose neighbourhood's residual exceeds this many levels (in cell-mean units) get a
/// proportionally stronger mark, up to [`TEXTURE_GAIN`] times [`AMPLITUDE`].
const TEXTURE_UNIT: f32 = 2.0;
pub const TEXTURE_GAIN: f32 = 3.0;

/// The detector's weight of a cell is `1 / (NOISE_FLOOR² + texture²)`.
const NOISE_FLOOR: f32 = 6.0;

/// The marked ellipse's half-axes, as a multiple of the face box's.
const WIDEN: f32 = 1.6;

/// A video frame is read together with this many frames before and after it.
pub const TEMPORAL: usize = 8;

/// Window sides, as fractions of the frame's height, of the detector's scan (stride 2 cells);
/// the whole grid too.
const WINDOWS: [f32; 3] = [0.25, 0.4, 0.55];

/// Pictures whose cells would be smaller than this many pixels (under 120 lines) hold no mark
/// that survives coding.
const MIN_CELL: f32 = 2.0;

/// The mark's fraction of the region's half-axes over which it fades out at the ellipse edge.
const FEATHER: f32 = 0.2;

/// The pattern: the sign of cell (column `i`, row `j`).
fn sign(i: usize, j: usize) -> f32 {
    // splitmix64 of the cell's coordinates with facerelay's seed.
    let mut z = 0x6661_6365_7265_6c61u64 ^ ((i as u64) << 32 | j as u64);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    if z & 1 == 0 {
        1.0
    } else {
        -1.0
    }
}

/// Each pixel's cell index along one axis and its bump weight, for `len` pixels at `cell`
/// pixels per cell.
fn axis(len: usize, cell: f32) -> Vec<(usize, f32)> {
    (0..len)
        .map(|p| {
            let u = (p as f32 + 0.5) / cell;
            let i = u.floor();
            let s = (std::f32::consts::PI * (u - i)).sin();
            (i as usize, s * s)
        })
        .collect()
}

fn cell_size(height: usize) -> f32 {
    height as f32 / CELLS_PER_HEIGHT
}

/// The grid of a picture: pixels per cell, cells across and down, and each pixel's cell and
/// bump weight along both axes. `None` when the picture is too small for the mark.
struct Grid {
    nx: usize,
    ny: usize,
    cols: Vec<(usize, f32)>,
    rows: Vec<(usize, f32)>,
}

impl Grid {
    fn of(width: usize, height: usize) -> Option<Self> {
        let cell = cell_size(height);
        if cell < MIN_CELL {
            return None;
        }
        let nx = (width as f32 / cell).floor() as usize;
        let ny = (height as f32 / cell).floor() as usize;
        (nx >= 3 && ny >= 3).then(|| Self {
            nx,
            ny,
            cols: axis(width, cell),
            rows: axis(height, cell),
        })
    }

    /// Every cell.
    fn all(&self) -> [usize; 4] {
        [0, 0, self.nx, self.ny]
    }

    /// The bump-weighted mean, Σ b·Y / Σ b², of each cell in `cells` (`[i0, j0, i1, j1)`;
    /// 0 elsewhere). The mark adds ±its amplitude to it.
    fn means(&self, luma: &[u8], width: usize, stride: usize, cells: [usize; 4]) -> Vec<f32> {
        let (nx, ny) = (self.nx, self.ny);
        let [i0, j0, i1, j1] = [cells[0], cells[1], cells[2].min(nx), cells[3].min(ny)];
        let mut sum = vec![0f32; nx * ny];
        let mut wsq = vec![0f32; nx * ny];
        // The pixel columns of those cells.
        let x0 = self.cols.iter().position(|c| c.0 >= i0).unwrap_or(width);
        let x1 = self
            .cols
            .iter()
            .rposition(|c| c.0 < i1)
            .map_or(x0, |x| x + 1);
        for (y, &(j, by)) in self.rows.iter().enumerate() {
            if j >= j1 {
                break;
            }
            if j < j0 {
                continue;
            }
            let row = &luma[y * stride..y * stride + width];
            for (x, &(i, bx)) in self.cols.iter().enumerate().take(x1.max(x0)).skip(x0) {
                let b = bx * by;
                sum[j * nx + i] += b * f32::from(row[x]);
                wsq[j * nx + i] += b * b;
            }
        }
        sum.iter()
            .zip(&wsq)
            .map(|(s, w)| if *w > 0.0 { s / w } else { 0.0 })
            .collect()
    }

    /// Each interior cell's mean minus the mean of its 8 neighbours (0 on the border): what is
    /// left of the picture there, plus the mark.
    fn residual(&self, means: &[f32]) -> Vec<f32> {
        let (nx, ny) = (self.nx, self.ny);
        let mut d = vec![0f32; nx * ny];
        for j in 1..ny - 1 {
            for i in 1..nx - 1 {
                let mut around = 0.0;
                for (di, dj) in NEIGHBOURS {
                    around += means[(j + dj - 1) * nx + i + di - 1];
                }
                d[j * nx + i] = means[j * nx + i] - around / 8.0;
            }
        }
        d
    }

    /// The texture around each interior cell: the RMS residual of its 3×3 neighbourhood.
    fn texture(&self, d: &[f32]) -> Vec<f32> {
        let (nx, ny) = (self.nx, self.ny);
        let mut t = vec![0f32; nx * ny];
        for j in 1..ny - 1 {
            for i in 1..nx - 1 {
                let mut e = d[j * nx + i].powi(2);
                for (di, dj) in NEIGHBOURS {
                    e += d[(j + dj - 1) * nx + i + di - 1].powi(2);
                }
                t[j * nx + i] = (e / 9.0).sqrt();
            }
        }
        t
    }
}

/// The 8 neighbours of a cell, as offsets + 1.
const NEIGHBOURS: [(usize, usize); 8] = [
    (0, 0),
    (1, 0),
    (2, 0),
    (0, 1),
    (2, 1),
    (0, 2),
    (1, 2),
    (2, 2),
];

/// Adds the mark to the luma of `frame` inside each region (`[x0, y0, x1, y1]` frame boxes,
/// the faces written), as an ellipse around the box. `amplitude` is the peak change in smooth
/// cells; textured cells, where a change is masked by the picture, get up to
/// [`TEXTURE_GAIN`] times it.
pub fn embed(frame: &mut I420Frame, regions: &[[u32; 4]], amplitude: f32) {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let Some(grid) = Grid::of(w, h) else {
        return;
    };
    let gain = TEXTURE_GAIN;
    let t0 = TEXTURE_UNIT;
    let stride = frame.y_stride();
    let g = WIDEN;
    let ellipses: Vec<[f32; 4]> = regions
        .iter()
        .filter(|r| r[2] > r[0] && r[3] > r[1])
        .map(|r| {
            let [x0, y0, x1, y1] = r.map(|v| v as f32);
            [
                (x0 + x1) / 2.0,
                (y0 + y1) / 2.0,
                g * (x1 - x0) / 2.0,
                g * (y1 - y0) / 2.0,
            ]
        })
        .collect();
    let Some(bounds) = ellipses
        .iter()
        .map(|&[cx, cy, ax, ay]| {
            [
                (cx - ax).max(0.0),
                (cy - ay).max(0.0),
                (cx + ax).min(w as f32),
                (cy + ay).min(h as f32),
            ]
        })
        .reduce(|a, b| {
            [
                a[0].min(b[0]),
                a[1].min(b[1]),
                a[2].max(b[2]),
                a[3].max(b[3]),
            ]
        })
    else {
        return;
    };
    let [x0, y0, x1, y1] = bounds.map(|v| v as usize);
    if x0 >= x1.min(w) || y0 >= y1.min(h) {
        return;
    }
    // The texture of a marked cell needs the residuals of its neighbours, which need the means
    // of theirs: the means of the marked cells and two more around them, not of the frame.
    let near = [
        grid.cols[x0].0.saturating_sub(2),
        grid.rows[y0].0.saturating_sub(2),
        grid.cols[x1.min(w) - 1].0 + 3,
        grid.rows[y1.min(h) - 1].0 + 3,
    ];
    let texture = grid.texture(&grid.residual(&grid.means(frame.y(), w, stride, near)));
    // The strength at a pixel: the largest over the ellipses, so overlapping faces are marked
    // once.
    let strength = |x: f32, y: f32| {
        ellipses
            .iter()
            .map(|&[cx, cy, ax, ay]| {
                let r = (((x - cx) / ax).powi(2) + ((y - cy) / ay).powi(2)).sqrt();
                ((1.0 - r) / FEATHER).clamp(0.0, 1.0)
            })
            .fold(0.0f32, f32::max)
    };
    let (yp, _, _) = frame.planes_mut();
    for y in y0..y1.min(h) {
        let (j, by) = grid.rows[y];
        if j >= grid.ny {
            break;
        }
        for x in x0..x1.min(w) {
            let (i, bx) = grid.cols[x];
            if i >= grid.nx {
                break;
            }
            let m = strength(x as f32 + 0.5, y as f32 + 0.5);
            if m == 0.0 {
                continue;
            }
            let a = amplitude * (texture[j * grid.nx + i] / t0).clamp(1.0, gain);
            let p = &mut yp[y * stride + x];
            let v = f32::from(*p) + a * m * sign(i, j) * bx * by;
            *p = v.round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// What the detector reads from one picture: each interior cell's residual, weighted by how
/// little texture hides the mark there. Maps of consecutive frames of a video add up
/// ([`CellMap::add`]): the mark is the same in each, the picture's residue changes as things
/// move.
#[derive(Debug, Clone)]
pub struct CellMap {
    nx: usize,
    ny: usize,
    /// Interior cells, `(nx - 2) × (ny - 2)`.
    weighted: Vec<f32>,
}

impl CellMap {
    /// The map of a luma plane (`stride` bytes per row); `None` for pictures too small to hold
    /// the mark.
    pub fn of(luma: &[u8], width: usize, height: usize, stride: usize) -> Option<Self> {
        if width == 0 || height == 0 || stride < width || luma.len() < stride * (height - 1) + width
        {
            return None;
        }
        let grid = Grid::of(width, height)?;
        let (nx, ny) = (grid.nx, grid.ny);
        let d = grid.residual(&grid.means(luma, width, stride, grid.all()));
        let texture = grid.texture(&d);
        let floor = NOISE_FLOOR;
        let mut weighted = Vec::with_capacity((nx - 2) * (ny - 2));
        for j in 1..ny - 1 {
            for i in 1..nx - 1 {
                weighted.push(d[j * nx + i] / (floor * floor + texture[j * nx + i].powi(2)));
            }
        }
        Some(Self { nx, ny, weighted })
    }

    /// Adds another frame's map of the same grid (a different grid is ignored).
    pub fn add(&mut self, other: &CellMap) {
        if (other.nx, other.ny) == (self.nx, self.ny) {
            for (a, b) in self.weighted.iter_mut().zip(&other.weighted) {
                *a += b;
            }
        }
    }

    /// The largest window `z`: `Σ sign·m / √(Σ m²)` over the cells of each window.
    pub fn score(&self) -> f32 {
        let (gx, gy) = (self.nx - 2, self.ny - 2);
        let mut q = vec![0f64; gx * gy];
        let mut e = vec![0f64; gx * gy];
        for y in 0..gy {
            for x in 0..gx {
                let k = y * gx + x;
                let m = self.weighted[k];
                q[k] = f64::from(sign(x + 1, y + 1) * m);
                e[k] = f64::from(m * m);
            }
        }
        let (iq, ie) = (integral(&q, gx, gy), integral(&e, gx, gy));
        let window = |x0: usize, y0: usize, x1: usize, y1: usize| {
            let s = |t: &[f64]| {
                t[y1 * (gx + 1) + x1] - t[y0 * (gx + 1) + x1] - t[y1 * (gx + 1) + x0]
                    + t[y0 * (gx + 1) + x0]
            };
            let energy = s(&ie);
            if energy > 0.0 {
                (s(&iq) / energy.sqrt()) as f32
            } else {
                0.0
            }
        };
        let mut best = window(0, 0, gx, gy);
        for frac in WINDOWS {
            let side = (frac * self.ny as f32).round() as usize;
            if side > gx || side > gy || side < 4 {
                continue;
            }
            for y0 in (0..=gy - side).step_by(2) {
                for x0 in (0..=gx - side).step_by(2) {
                    best = best.max(window(x0, y0, x0 + side, y0 + side));
                }
            }
        }
        best
    }
}

/// The detector's score of one picture's luma plane (`stride` bytes per row): the largest
/// window `z`; `-∞` for pictures too small to hold the mark.
pub fn score(luma: &[u8], width: usize, height: usize, stride: usize) -> f32 {
    CellMap::of(luma, width, height, stride).map_or(f32::NEG_INFINITY, |m| m.score())
}

/// The map of a frame's luma.
pub fn frame_map(frame: &I420Frame) -> Option<CellMap> {
    CellMap::of(
        frame.y(),
        frame.width() as usize,
        frame.height() as usize,
        frame.y_stride(),
    )
}

/// Each frame's score in a video, read together with its neighbours: frame `t` is scored on
/// the sum of the maps of frames `t - TEMPORAL ..= t + TEMPORAL` of the same size.
pub fn video_scores(maps: &[Option<CellMap>]) -> Vec<f32> {
    (0..maps.len())
        .map(|t| {
            let Some(own) = &maps[t] else {
                return f32::NEG_INFINITY;
            };
            let mut sum = own.clone();
            let lo = t.saturating_sub(TEMPORAL);
            let hi = (t + TEMPORAL).min(maps.len() - 1);
            for (k, m) in maps.iter().enumerate().take(hi + 1).skip(lo) {
                if k != t {
                    if let Some(m) = m {
                        sum.add(m);
                    }
                }
            }
            sum.score()
        })
        .collect()
}

/// The score of a frame's luma.
pub fn frame_score(frame: &I420Frame) -> f32 {
    score(
        frame.y(),
        frame.width() as usize,
        frame.height() as usize,
        frame.y_stride(),
    )
}

/// Summed-area table, `(gx + 1) × (gy + 1)`.
fn integral(v: &[f64], gx: usize, gy: usize) -> Vec<f64> {
    let mut t = vec![0f64; (gx + 1) * (gy + 1)];
    for y in 0..gy {
        let mut row = 0.0;
        for x in 0..gx {
            row += v[y * gx + x];
            t[(y + 1) * (gx + 1) + x + 1] = t[y * (gx + 1) + x + 1] + row;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth picture with deterministic noise of ±`noise` levels.
    fn picture(w: u32, h: u32, noise: u32, seed: u32) -> I420Frame {
        let mut f = I420Frame::filled(w, h, 0, 128, 128).unwrap();
        let (y, _, _) = f.planes_mut();
        for row in 0..h {
            for col in 0..w {
                let n = (row * w + col + seed * 7919)
                    .wrapping_mul(2_654_435_761)
                    .rotate_left(7)
                    % (2 * noise + 1);
                let base = 60 + (col * 120 / w) + (row * 60 / h);
                y[(row * w + col) as usize] = (base + n - noise) as u8;
            }
        }
        f
    }

    #[test]
    fn a_marked_face_region_scores_high_and_the_picture_barely_changes() {
        let original = picture(640, 480, 6, 1);
        let mut marked = original.clone();
        embed(&mut marked, &[[220, 120, 420, 380]], AMPLITUDE);
        let psnr = crate::media::y_psnr(&original, &marked).unwrap();
        assert!(psnr > 45.0, "psnr {psnr}");
        // Outside the region nothing changed.
        assert_eq!(marked.y()[10 * 640 + 10], original.y()[10 * 640 + 10]);
        let (s0, s1) = (frame_score(&original), frame_score(&marked));
        eprintln!("unmarked {s0} marked {s1} psnr {psnr}");
        assert!(s0 < THRESHOLD, "unmarked {s0}");
        assert!(s1 > 2.0 * THRESHOLD, "marked {s1}");
    }

    #[test]
    fn the_mark_survives_scaling_the_whole_frame() {
        let mut marked = picture(640, 480, 4, 2);
        embed(&mut marked, &[[200, 100, 440, 400]], AMPLITUDE);
        // Nearest-neighbour up to 960x720: the grid scales with the height.
        let (w, h) = (960usize, 720usize);
        let mut big = vec![0u8; w * h];
        for y in 0..h {
            for x in 0..w {
                big[y * w + x] = marked.y()[(y * 480 / h) * 640 + x * 640 / w];
            }
        }
        let s = score(&big, w, h, w);
        assert!(s > THRESHOLD, "scaled {s}");
    }

    #[test]
    fn unmarked_noise_stays_below_the_threshold() {
        let mut worst = f32::MIN;
        for seed in 0..40 {
            worst = worst.max(frame_score(&picture(320, 240, 40, seed)));
        }
        assert!(worst < THRESHOLD, "worst {worst}");
    }

    #[test]
    fn the_texture_of_marked_cells_needs_only_the_means_two_cells_around_them() {
        let f = picture(640, 480, 30, 3);
        let grid = Grid::of(640, 480).unwrap();
        let full = grid.texture(&grid.residual(&grid.means(f.y(), 640, 640, grid.all())));
        let (cells, margin) = ([40usize, 30, 90, 100], 2);
        let near = [
            cells[0] - margin,
            cells[1] - margin,
            cells[2] + margin + 1,
            cells[3] + margin + 1,
        ];
        let part = grid.texture(&grid.residual(&grid.means(f.y(), 640, 640, near)));
        for j in cells[1]..=cells[3] {
            for i in cells[0]..=cells[2] {
                assert_eq!(part[j * grid.nx + i], full[j * grid.nx + i], "cell {i},{j}");
            }
        }
    }

    #[test]
    fn odd_inputs_score_nothing() {
        assert_eq!(score(&[], 0, 0, 0), f32::NEG_INFINITY);
        assert_eq!(score(&[0; 16], 4, 4, 4), f32::NEG_INFINITY);
        assert_eq!(score(&[0; 10], 640, 480, 640), f32::NEG_INFINITY);
    }
}
