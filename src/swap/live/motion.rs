//! Between two detections the deep tier swaps where the face was last detected. A face that
//! leaves that place faster than the detector runs (a turn of the head, a jump across the
//! picture, a hand over it) would then go out unswapped elsewhere while a swap is pasted where it
//! was. So each frame's tracked box is compared with the same box of the frame before, on a
//! coarse grid of mean luma: when it changed much, the track is not trusted and the frame waits
//! for its own detection (found elsewhere: swapped there; not found: the frame fails closed).

use crate::media::I420Frame;

/// Cells per side of the grid.
const GRID: usize = 8;

/// Mean absolute difference of the grid's cells (luma levels, 0–255) above which the box is
/// taken to show something else than the frame before. Talking, blinking and a slow turn stay
/// well under it; a face replaced by background, or a light switched, goes over.
pub const MOVED_LUMA: f32 = 24.0;

/// The mean luma of each grid cell of `bbox` (frame pixels, clipped), every other pixel read.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxSignature {
    bbox: [f32; 4],
    cells: [u8; GRID * GRID],
}

impl BoxSignature {
    pub fn of(frame: &I420Frame, bbox: &[f32; 4]) -> Self {
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        let clip = |v: f32, max: usize| (v.max(0.0) as usize).min(max);
        let (x0, y0) = (clip(bbox[0], w), clip(bbox[1], h));
        let (x1, y1) = (
            clip(bbox[2].ceil(), w).max(x0 + 1),
            clip(bbox[3].ceil(), h).max(y0 + 1),
        );
        let (x1, y1) = (x1.min(w), y1.min(h));
        let y = frame.y();
        let stride = frame.y_stride();
        let mut cells = [0u8; GRID * GRID];
        for (i, cell) in cells.iter_mut().enumerate() {
            let (cx, cy) = (i % GRID, i / GRID);
            let (ax, bx) = (x0 + (x1 - x0) * cx / GRID, x0 + (x1 - x0) * (cx + 1) / GRID);
            let (ay, by) = (y0 + (y1 - y0) * cy / GRID, y0 + (y1 - y0) * (cy + 1) / GRID);
            let (mut sum, mut n) = (0u32, 0u32);
            for row in (ay..by.max(ay + 1).min(h)).step_by(2) {
                for col in (ax..bx.max(ax + 1).min(w)).step_by(2) {
                    sum += u32::from(y[row * stride + col]);
                    n += 1;
                }
            }
            *cell = (sum / n.max(1)) as u8;
        }
        Self { bbox: *bbox, cells }
    }

    /// Whether `now`, taken over the same box, shows something else than `self`.
    pub fn moved(&self, now: &Self) -> bool {
        if self.bbox != now.bbox {
            return false;
        }
        let diff: u32 = self
            .cells
            .iter()
            .zip(&now.cells)
            .map(|(a, b)| u32::from(a.abs_diff(*b)))
            .sum();
        diff as f32 / (GRID * GRID) as f32 > MOVED_LUMA
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn textured(w: u32, h: u32, shift: usize) -> I420Frame {
        let mut f = I420Frame::filled(w, h, 0, 128, 128).unwrap();
        let (y, _, _) = f.planes_mut();
        for (i, p) in y.iter_mut().enumerate() {
            let (x, r) = (i % w as usize + shift, i / w as usize);
            *p = ((x / 20 + r / 20) % 2 * 160 + 40) as u8;
        }
        f
    }

    #[test]
    fn the_same_box_over_a_changed_picture_is_seen_as_moved() {
        let b = [100.0, 100.0, 260.0, 260.0];
        let a = BoxSignature::of(&textured(640, 480, 0), &b);
        assert!(!a.moved(&BoxSignature::of(&textured(640, 480, 0), &b)));
        // Two pixels of motion: the same picture.
        assert!(!a.moved(&BoxSignature::of(&textured(640, 480, 2), &b)));
        // Half a checker square: something else.
        assert!(a.moved(&BoxSignature::of(&textured(640, 480, 10), &b)));
        let flat = I420Frame::filled(640, 480, 40, 128, 128).unwrap();
        assert!(a.moved(&BoxSignature::of(&flat, &b)));
        // Another box (the track moved with a detection): no comparison.
        let other = [102.0, 100.0, 262.0, 260.0];
        assert!(!a.moved(&BoxSignature::of(&flat, &other)));
        // Boxes over the edge are clipped.
        let edge = BoxSignature::of(&flat, &[-50.0, 400.0, 700.0, 900.0]);
        assert!(!edge.moved(&BoxSignature::of(&flat, &[-50.0, 400.0, 700.0, 900.0])));
    }
}
