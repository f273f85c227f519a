//! The disclosure label drawn into swapped frames: "FACE SWAPPED" in a 5×7 bitmap font, white
//! on a dark neutral badge in the top-left corner, written straight into Y, U and V. Scaled
//! with the frame (2× at 480 lines) so it stays legible after H.264 at normal bitrates.

use crate::media::I420Frame;

const TEXT: &[u8] = b"FACE SWAPPED";
const GLYPH_W: u32 = 5;
const GLYPH_H: u32 = 7;
/// Glyph cell: one column of space after each glyph.
const ADVANCE: u32 = GLYPH_W + 1;
/// Badge padding around the text and margin to the frame edge, in font pixels.
const PAD: u32 = 2;
const MARGIN: u32 = 4;
const BADGE_Y: u8 = 32;
const TEXT_Y: u8 = 235;

/// Rows of a glyph, most significant of the low 5 bits leftmost.
fn glyph(c: u8) -> [u8; 7] {
    match c {
        b'A' => [
            0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001,
        ],
        b'C' => [
            0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110,
        ],
        b'D' => [
            0b11110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b11110,
        ],
        b'E' => [
            0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111,
        ],
        b'F' => [
            0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000,
        ],
        b'P' => [
            0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000,
        ],
        b'S' => [
            0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110,
        ],
        b'W' => [
            0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010,
        ],
        _ => [0; 7],
    }
}

/// Font pixel size in frame pixels: 1 up to 479 lines, 2 at 480, 3 at 720, 4 at 1080 (via
/// the shorter side, so portrait frames scale the same way).
fn scale(width: u32, height: u32) -> u32 {
    (width.min(height) / 240).max(1)
}

/// Where the badge goes, `[x0, y0, x1, y1)` in even frame pixels (chroma-aligned), clipped to
/// the frame; `None` for frames too small to hold any of it.
pub fn label_box(width: u32, height: u32) -> Option<[u32; 4]> {
    let s = scale(width, height);
    let text_w = TEXT.len() as u32 * ADVANCE - 1;
    let (badge_w, badge_h) = ((text_w + 2 * PAD) * s, (GLYPH_H + 2 * PAD) * s);
    // Top-left: players put names and controls along the bottom edge, where the label
    // would be covered.
    let x0 = (MARGIN * s) & !1;
    let y0 = (MARGIN * s) & !1;
    let y1 = (y0 + badge_h + 1).min(height) & !1;
    let x1 = (x0 + badge_w + 1).min(width) & !1;
    (x0 < x1 && y0 < y1).then_some([x0, y0, x1, y1])
}

/// Draws the label into the frame. Touches only [`label_box`].
pub fn draw_label(frame: &mut I420Frame) {
    let (width, height) = (frame.width(), frame.height());
    let Some([x0, y0, x1, y1]) = label_box(width, height) else {
        return;
    };
    let s = scale(width, height);
    let w = width as usize;
    let cw = w / 2;
    let (yp, up, vp) = frame.planes_mut();
    // Text origin: inside the padding.
    let (tx, ty) = (x0 + PAD * s, y0 + PAD * s);
    for y in y0..y1 {
        for x in x0..x1 {
            let lit = x >= tx && y >= ty && {
                let (fx, fy) = ((x - tx) / s, (y - ty) / s);
                let cell = (fx / ADVANCE) as usize;
                let col = fx % ADVANCE;
                fy < GLYPH_H
                    && col < GLYPH_W
                    && TEXT
                        .get(cell)
                        .is_some_and(|&c| glyph(c)[fy as usize] >> (GLYPH_W - 1 - col) & 1 == 1)
            };
            if let Some(p) = yp.get_mut(y as usize * w + x as usize) {
                *p = if lit { TEXT_Y } else { BADGE_Y };
            }
        }
    }
    // Neutral chroma over the whole badge, so the label reads the same on any background.
    for cy in (y0 / 2) as usize..(y1 / 2) as usize {
        for cx in (x0 / 2) as usize..(x1 / 2) as usize {
            let i = cy * cw + cx;
            if let (Some(u), Some(v)) = (up.get_mut(i), vp.get_mut(i)) {
                *u = 128;
                *v = 128;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_fits_common_sizes_and_stays_in_its_box() {
        let [x0, y0, x1, y1] = label_box(640, 480).unwrap();
        // 2x font: (71 + 4) · 2 = 150 wide, (7 + 4) · 2 = 22 high, 8 px from the edges.
        assert_eq!([x0, y0, x1, y1], [8, 8, 158, 30]);
        let mut f = I420Frame::filled(640, 480, 100, 90, 160).unwrap();
        draw_label(&mut f);
        let lit = f.y().iter().filter(|&&v| v == TEXT_Y).count();
        let badge = f.y().iter().filter(|&&v| v == BADGE_Y).count();
        // Text is a real share of the badge: legible, not a speck.
        assert!(lit > 400 && badge > lit, "{lit} {badge}");
        for y in 0..480u32 {
            for x in 0..640u32 {
                let inside = x >= x0 && x < x1 && y >= y0 && y < y1;
                let v = f.y()[(y * 640 + x) as usize];
                assert_eq!(v == 100, !inside, "({x},{y})");
            }
        }
        // Tiny frames: clipped or skipped, never a panic.
        for (w, h) in [(2, 2), (16, 16), (64, 32), (100, 40), (1920, 1080)] {
            let mut f = I420Frame::filled(w, h, 100, 128, 128).unwrap();
            draw_label(&mut f);
        }
    }
}
