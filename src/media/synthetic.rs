//! Synthetic test video: frames that carry their own frame number, so a receiver can tell
//! which frame it got and compare it with exactly what was sent.

use super::I420Frame;

const BLOCK: u32 = 32;
const BITS: u32 = 16;
const WHITE: u8 = 235;
const BLACK: u8 = 16;

/// Frame `n` of the test pattern: a diagonal luma ramp and a box that both move with `n`,
/// chroma gradients, and along the top a row of 16 black/white 32-pixel blocks holding `n`
/// (most significant bit first) followed by a white and a black guard block.
///
/// Width must be at least 18 × 32 = 576 pixels and height at least 64.
pub fn numbered_frame(width: u32, height: u32, n: u16) -> I420Frame {
    let mut frame = I420Frame::filled(width, height, 128, 128, 128).expect("even dimensions");
    let (y, u, v) = frame.planes_mut();
    let w = width as usize;
    let t = n as usize;
    for row in 0..height as usize {
        for col in 0..w {
            y[row * w + col] = (40 + (col + 2 * row + 4 * t) % 160) as u8;
        }
    }
    // A moving box: motion the encoder has to follow.
    let bx = (t * 7) % (w.saturating_sub(96).max(1));
    let by = 96 + (t * 3) % (height as usize).saturating_sub(192).max(1);
    for row in by..(by + 64).min(height as usize) {
        for col in bx..(bx + 64).min(w) {
            y[row * w + col] = 220;
        }
    }
    let cw = w / 2;
    for row in 0..height as usize / 2 {
        for col in 0..cw {
            u[row * cw + col] = (64 + (col * 128) / cw.max(1)) as u8;
            v[row * cw + col] = (64 + (row * 256) / height as usize) as u8;
        }
    }
    let mut block = |index: u32, white: bool| {
        let value = if white { WHITE } else { BLACK };
        for row in 0..BLOCK as usize {
            let start = row * w + (index * BLOCK) as usize;
            y[start..start + BLOCK as usize].fill(value);
        }
    };
    for bit in 0..BITS {
        block(bit, n & (1 << (BITS - 1 - bit)) != 0);
    }
    block(BITS, true);
    block(BITS + 1, false);
    frame
}

/// Reads the frame number back (after lossy coding): the mean of each block's centre is
/// thresholded. `None` when the guard blocks do not read white and black.
pub fn read_frame_number(frame: &I420Frame) -> Option<u16> {
    let w = frame.width() as usize;
    if frame.width() < (BITS + 2) * BLOCK || frame.height() < BLOCK {
        return None;
    }
    let y = frame.y();
    let mean = |index: u32| {
        let mut sum = 0u32;
        for row in 8..24usize {
            for col in 8..24usize {
                sum += y[row * w + (index * BLOCK) as usize + col] as u32;
            }
        }
        sum / 256
    };
    if mean(BITS) < 200 || mean(BITS + 1) > 60 {
        return None;
    }
    Some((0..BITS).fold(0u16, |n, bit| (n << 1) | (mean(bit) > 128) as u16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_frames_differ() {
        for n in [0u16, 1, 255, 4242, u16::MAX] {
            assert_eq!(read_frame_number(&numbered_frame(640, 480, n)), Some(n));
        }
        assert_ne!(numbered_frame(640, 480, 1), numbered_frame(640, 480, 2));
        assert_eq!(
            read_frame_number(&I420Frame::filled(640, 480, 128, 128, 128).unwrap()),
            None
        );
        assert_eq!(
            read_frame_number(&I420Frame::filled(64, 64, 0, 0, 0).unwrap()),
            None
        );
    }
}
