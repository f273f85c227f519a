//! Failing closed: once a participant has chosen a face, a frame of theirs that cannot be
//! swapped (no face found, the track lost, a model error or timeout, a full queue) never goes
//! out with the original face. `swap.on_failure` says what goes out instead:
//!
//! - `hold` (default): the last swapped frame of the stream again, for up to `swap.hold_ms`;
//!   past that, or before any frame was swapped, as `blur`.
//! - `blur`: the whole frame pixelated beyond recognition, and the disclosure label. Not only
//!   the face regions: a frame fails because the face was not where the tracker looked (a second
//!   face, a face that moved, one the detector missed), so no region of it is known to be
//!   clear of the face.
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
    /// The whole frame pixelated.
    Blurred,
    /// The original frame (`on_failure = "pass"`).
    Unswapped,
}

/// The per-stream fail-closed state: the last swapped frame.
#[derive(Debug)]
pub struct Guard {
    policy: OnFailure,
    hold: Duration,
    label: bool,
    last_good: Option<(I420Frame, Instant)>,
}

impl Guard {
    pub fn new(policy: OnFailure, hold: Duration, label: bool) -> Self {
        Self {
            policy,
            hold,
            label,
            last_good: None,
        }
    }

    /// The face was cleared: nothing to keep.
    pub fn reset(&mut self) {
        self.last_good = None;
    }

    /// `frame` went out swapped.
    pub fn swapped(&mut self, frame: &I420Frame) -> FrameState {
        if self.policy == OnFailure::Hold {
            match &mut self.last_good {
                Some((f, t)) if f.width() == frame.width() && f.height() == frame.height() => {
                    f.clone_from(frame);
                    *t = Instant::now();
                }
                _ => self.last_good = Some((frame.clone(), Instant::now())),
            }
        }
        FrameState::Swapped
    }

    /// `frame` could not be swapped. Makes the frame safe to send, as the policy says, and
    /// returns what it now carries.
    pub fn failed(&mut self, frame: &mut I420Frame) -> FrameState {
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
        let (w, h) = (frame.width(), frame.height());
        pixelate(frame, [0, 0, w, h], block_for(w.max(h)));
        if self.label {
            draw_label(frame);
        }
        FrameState::Blurred
    }
}

/// Blocks of about a sixth of the frame's longer side (at least 16 px): a face of any size in
/// it becomes at most a handful of flat tiles, with nothing of its features left.
fn block_for(side: u32) -> u32 {
    ((side / 6).max(16) + 1) & !1
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

    /// Every tile of `block`×`block` px of the frame's luma is flat.
    fn flat_tiles(f: &I420Frame, block: usize) -> bool {
        let w = f.width() as usize;
        f.y().chunks(w).enumerate().all(|(y, row)| {
            row.iter()
                .enumerate()
                .all(|(x, &v)| v == f.y()[(y / block * block) * w + x / block * block])
        })
    }

    #[test]
    fn hold_repeats_the_last_swapped_frame_then_pixelates_the_whole_frame() {
        let mut g = Guard::new(OnFailure::Hold, Duration::from_millis(50), false);
        let swapped = I420Frame::filled(96, 96, 200, 100, 100).unwrap();
        let original = textured(96, 96);
        // Before any swap: the whole frame is pixelated.
        let mut f = original.clone();
        assert_eq!(g.failed(&mut f), FrameState::Blurred);
        assert!(flat_tiles(&f, 16), "{:?}", &f.y()[..32]);
        assert_eq!(g.swapped(&swapped), FrameState::Swapped);
        let mut f = original.clone();
        assert_eq!(g.failed(&mut f), FrameState::Held);
        assert_eq!(f, swapped);
        // Past the hold: the whole frame again, not only where a face was last seen (the face
        // that made the frame fail may be anywhere in it), and every corner too.
        std::thread::sleep(Duration::from_millis(60));
        let mut f = original.clone();
        assert_eq!(g.failed(&mut f), FrameState::Blurred);
        assert!(flat_tiles(&f, 16));
        for (x, y) in [(1, 1), (94, 1), (1, 94), (94, 94), (50, 50)] {
            assert_ne!(
                f.y()[y * 96 + x],
                original.y()[y * 96 + x],
                "({x}, {y}) kept"
            );
        }
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
        assert_eq!(g.failed(&mut f), FrameState::Unswapped);
        assert_eq!(f, original);
    }
}
