//! Failing closed: once a participant has chosen a face, a frame of theirs that cannot be
//! swapped (no face found, the track lost, a model error or timeout, a full queue) never goes
//! out with the original face. `swap.on_failure` says what goes out instead:
//!
//! - `hold` (default): the last swapped frame of the stream again, for up to `swap.hold_ms`;
//!   past that, or before any frame was swapped, as `blur`.
//! - `blur`: the frame with every face region it is known to have (found now, or last known)
//!   pixelated beyond recognition, and the disclosure label; with no region known at all (the
//!   stream's first frames), the whole frame.
//! - `pass`: the frame as it is (the real face shows), for operators who choose that.

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::draw_label;
use crate::media::I420Frame;

/// `swap.on_failure`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    Hold,
    Blur,
    Pass,
}

/// What a frame of a stream with a chosen face carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameState {
    /// The chosen face.
    Swapped,
    /// The last swapped frame again.
    Held,
    /// The face regions (or the whole frame) pixelated.
    Blurred,
    /// The original frame (`on_failure = "pass"`).
    Unswapped,
}

/// A face region is widened by this fraction of its size on every side before pixelation, so
/// hair line, ears and chin go too.
const MARGIN: f32 = 0.25;

/// The per-stream fail-closed state: the last swapped frame and the last known face regions.
#[derive(Debug)]
pub struct Guard {
    policy: OnFailure,
    hold: Duration,
    label: bool,
    last_good: Option<(I420Frame, Instant)>,
    regions: Vec<[u32; 4]>,
}

impl Guard {
    pub fn new(policy: OnFailure, hold: Duration, label: bool) -> Self {
        Self {
            policy,
            hold,
            label,
            last_good: None,
            regions: Vec::new(),
        }
    }

    /// The face was cleared: nothing to keep.
    pub fn reset(&mut self) {
        self.last_good = None;
        self.regions.clear();
    }

    /// `frame` went out swapped; `regions` are its face boxes.
    pub fn swapped(&mut self, frame: &I420Frame, regions: &[[u32; 4]]) -> FrameState {
        if self.policy == OnFailure::Hold {
            match &mut self.last_good {
                Some((f, t)) if f.width() == frame.width() && f.height() == frame.height() => {
                    f.clone_from(frame);
                    *t = Instant::now();
                }
                _ => self.last_good = Some((frame.clone(), Instant::now())),
            }
        }
        self.regions.clear();
        self.regions.extend_from_slice(regions);
        FrameState::Swapped
    }

    /// `frame` could not be swapped; `found` are face boxes seen in it, if any. Makes the frame
    /// safe to send, as the policy says, and returns what it now carries.
    pub fn failed(&mut self, frame: &mut I420Frame, found: &[[u32; 4]]) -> FrameState {
        match self.policy {
            OnFailure::Pass => return FrameState::Unswapped,
            OnFailure::Hold => {
                if let Some((good, at)) = &self.last_good {
                    let same_size =
                        good.width() == frame.width() && good.height() == frame.height();
                    if same_size && at.elapsed() <= self.hold {
                        frame.clone_from(good);
                        return FrameState::Held;
                    }
                }
            }
            OnFailure::Blur => {}
        }
        if !found.is_empty() {
            self.regions.clear();
            self.regions.extend_from_slice(found);
        }
        let (w, h) = (frame.width(), frame.height());
        if self.regions.is_empty() {
            pixelate(frame, [0, 0, w, h], block_for(w.max(h)));
        } else {
            for r in self.regions.clone() {
                let bx = widen(r, w, h);
                pixelate(frame, bx, block_for((bx[2] - bx[0]).max(bx[3] - bx[1])));
            }
        }
        if self.label {
            draw_label(frame);
        }
        FrameState::Blurred
    }
}

/// Blocks of about a sixth of the region's size (at least 16 px): a face becomes a handful of
/// flat tiles, with nothing of its features left.
fn block_for(side: u32) -> u32 {
    ((side / 6).max(16) + 1) & !1
}

fn widen(r: [u32; 4], w: u32, h: u32) -> [u32; 4] {
    let mw = ((r[2].saturating_sub(r[0])) as f32 * MARGIN) as u32;
    let mh = ((r[3].saturating_sub(r[1])) as f32 * MARGIN) as u32;
    [
        r[0].saturating_sub(mw) & !1,
        r[1].saturating_sub(mh) & !1,
        ((r[2] + mw).min(w) + 1).min(w) & !1,
        ((r[3] + mh).min(h) + 1).min(h) & !1,
    ]
}

/// Replaces each `block`×`block` tile of the box (even coordinates) by its mean, in Y, U and V.
pub fn pixelate(frame: &mut I420Frame, bx: [u32; 4], block: u32) {
    let (fw, fh) = (frame.width() as usize, frame.height() as usize);
    let [x0, y0, x1, y1] = bx.map(|v| v as usize);
    let (x1, y1) = (x1.min(fw), y1.min(fh));
    if x0 >= x1 || y0 >= y1 {
        return;
    }
    let b = block.max(2) as usize;
    let cw = fw / 2;
    let (yp, up, vp) = frame.planes_mut();
    let mut ty = y0;
    while ty < y1 {
        let ey = (ty + b).min(y1);
        let mut tx = x0;
        while tx < x1 {
            let ex = (tx + b).min(x1);
            let mean = |plane: &mut [u8],
                        stride: usize,
                        (a, c): (usize, usize),
                        (d, e): (usize, usize)| {
                let mut sum = 0u64;
                for y in c..e {
                    for x in a..d {
                        sum += u64::from(plane[y * stride + x]);
                    }
                }
                let n = ((d - a) * (e - c)).max(1) as u64;
                let m = (sum / n) as u8;
                for y in c..e {
                    plane[y * stride + a..y * stride + d].fill(m);
                }
            };
            mean(yp, fw, (tx, ty), (ex, ey));
            let (cx0, cy0, cx1, cy1) = (
                tx / 2,
                ty / 2,
                ex.div_ceil(2).min(cw),
                ey.div_ceil(2).min(fh / 2),
            );
            if cx0 < cx1 && cy0 < cy1 {
                mean(up, cw, (cx0, cy0), (cx1, cy1));
                mean(vp, cw, (cx0, cy0), (cx1, cy1));
            }
            tx = ex;
        }
        ty = ey;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn textured(w: u32, h: u32) -> I420Frame {
        let mut f = I420Frame::filled(w, h, 0, 128, 128).unwrap();
        let (y, u, _) = f.planes_mut();
        for (i, p) in y.iter_mut().enumerate() {
            *p = (i * 37 % 251) as u8;
        }
        for (i, p) in u.iter_mut().enumerate() {
            *p = (i * 11 % 200) as u8;
        }
        f
    }

    #[test]
    fn hold_repeats_the_last_swapped_frame_then_blurs() {
        let mut g = Guard::new(OnFailure::Hold, Duration::from_millis(50), false);
        let swapped = I420Frame::filled(64, 48, 200, 100, 100).unwrap();
        let original = textured(64, 48);
        // Before any swap: the whole frame is pixelated.
        let mut f = original.clone();
        assert_eq!(g.failed(&mut f, &[]), FrameState::Blurred);
        assert_ne!(f, original);
        assert_eq!(g.swapped(&swapped, &[[8, 8, 40, 40]]), FrameState::Swapped);
        let mut f = original.clone();
        assert_eq!(g.failed(&mut f, &[]), FrameState::Held);
        assert_eq!(f, swapped);
        std::thread::sleep(Duration::from_millis(60));
        let mut f = original.clone();
        assert_eq!(g.failed(&mut f, &[]), FrameState::Blurred);
        // The last known region (widened) is pixelated; far outside it nothing changed.
        assert_ne!(f.y()[20 * 64 + 20], original.y()[20 * 64 + 20]);
        assert_eq!(f.y()[47 * 64 + 63], original.y()[47 * 64 + 63]);
    }

    #[test]
    fn pixelation_leaves_flat_tiles_and_pass_leaves_the_frame() {
        let mut f = textured(64, 64);
        pixelate(&mut f, [0, 0, 64, 64], 16);
        for ty in 0..4 {
            for tx in 0..4 {
                let v = f.y()[(ty * 16) * 64 + tx * 16];
                for y in 0..16 {
                    for x in 0..16 {
                        assert_eq!(f.y()[(ty * 16 + y) * 64 + tx * 16 + x], v);
                    }
                }
            }
        }
        let mut g = Guard::new(OnFailure::Pass, Duration::ZERO, true);
        let original = textured(64, 48);
        let mut f = original.clone();
        assert_eq!(g.failed(&mut f, &[[0, 0, 10, 10]]), FrameState::Unswapped);
        assert_eq!(f, original);
    }
}
