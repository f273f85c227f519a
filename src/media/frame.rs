//! Planar I420 (YUV 4:2:0) frames: the currency between decoder, frame stage and encoder.

use std::fmt;

/// An I420 frame with tightly packed planes: Y is `width × height`, U and V are
/// `width/2 × height/2` each, stored one after the other in one buffer.
///
/// Width and height are always even (H.264 4:2:0 needs it), so chroma planes are exact.
#[derive(Clone, PartialEq, Eq)]
pub struct I420Frame {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

/// Why a buffer cannot be an [`I420Frame`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame dimensions {width}x{height} must be even and non-zero")]
    BadDimensions { width: u32, height: u32 },
    #[error("I420 buffer for {width}x{height} must hold {expected} bytes, got {actual}")]
    BadLength {
        width: u32,
        height: u32,
        expected: usize,
        actual: usize,
    },
}

impl I420Frame {
    /// Bytes an I420 buffer of this size holds.
    pub fn buffer_len(width: u32, height: u32) -> usize {
        let luma = width as usize * height as usize;
        luma + luma / 2
    }

    fn check_dimensions(width: u32, height: u32) -> Result<(), FrameError> {
        if width == 0 || height == 0 || width % 2 != 0 || height % 2 != 0 {
            return Err(FrameError::BadDimensions { width, height });
        }
        Ok(())
    }

    /// A frame filled with one colour given in Y, U, V.
    pub fn filled(width: u32, height: u32, y: u8, u: u8, v: u8) -> Result<Self, FrameError> {
        Self::check_dimensions(width, height)?;
        let luma = width as usize * height as usize;
        let mut data = vec![y; luma];
        data.resize(luma + luma / 4, u);
        data.resize(luma + luma / 2, v);
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// Wraps a packed I420 buffer.
    pub fn from_vec(width: u32, height: u32, data: Vec<u8>) -> Result<Self, FrameError> {
        Self::check_dimensions(width, height)?;
        let expected = Self::buffer_len(width, height);
        if data.len() != expected {
            return Err(FrameError::BadLength {
                width,
                height,
                expected,
                actual: data.len(),
            });
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// Copies three planes with arbitrary strides (as decoders hand them out) into a packed frame.
    #[allow(clippy::too_many_arguments)]
    pub fn from_strided(
        width: u32,
        height: u32,
        y: &[u8],
        y_stride: usize,
        u: &[u8],
        u_stride: usize,
        v: &[u8],
        v_stride: usize,
    ) -> Result<Self, FrameError> {
        Self::check_dimensions(width, height)?;
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = (w / 2, h / 2);
        let too_short = |plane: &[u8], stride: usize, pw: usize, ph: usize| {
            stride < pw || plane.len() < stride * (ph - 1) + pw
        };
        if too_short(y, y_stride, w, h)
            || too_short(u, u_stride, cw, ch)
            || too_short(v, v_stride, cw, ch)
        {
            return Err(FrameError::BadLength {
                width,
                height,
                expected: Self::buffer_len(width, height),
                actual: y.len() + u.len() + v.len(),
            });
        }
        let mut data = Vec::with_capacity(Self::buffer_len(width, height));
        for row in 0..h {
            data.extend_from_slice(&y[row * y_stride..row * y_stride + w]);
        }
        for (plane, stride) in [(u, u_stride), (v, v_stride)] {
            for row in 0..ch {
                data.extend_from_slice(&plane[row * stride..row * stride + cw]);
            }
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// The whole packed buffer (Y, then U, then V).
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    pub fn into_vec(self) -> Vec<u8> {
        self.data
    }

    fn luma_len(&self) -> usize {
        self.width as usize * self.height as usize
    }

    pub fn y(&self) -> &[u8] {
        &self.data[..self.luma_len()]
    }

    pub fn u(&self) -> &[u8] {
        let l = self.luma_len();
        &self.data[l..l + l / 4]
    }

    pub fn v(&self) -> &[u8] {
        let l = self.luma_len();
        &self.data[l + l / 4..]
    }

    /// Mutable Y, U and V planes at once.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let l = self.luma_len();
        let (y, uv) = self.data.split_at_mut(l);
        let (u, v) = uv.split_at_mut(l / 4);
        (y, u, v)
    }

    /// Y stride in bytes (planes are packed, so it equals the width).
    pub fn y_stride(&self) -> usize {
        self.width as usize
    }

    /// U and V stride in bytes.
    pub fn uv_stride(&self) -> usize {
        self.width as usize / 2
    }
}

impl fmt::Debug for I420Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("I420Frame")
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_odd_and_zero_dimensions() {
        assert!(I420Frame::filled(3, 2, 0, 0, 0).is_err());
        assert!(I420Frame::filled(0, 2, 0, 0, 0).is_err());
        assert!(I420Frame::from_vec(4, 4, vec![0; 23]).is_err());
    }

    #[test]
    fn planes_have_the_right_sizes_and_order() {
        let f = I420Frame::filled(4, 2, 10, 20, 30).unwrap();
        assert_eq!(f.y(), &[10; 8]);
        assert_eq!(f.u(), &[20; 2]);
        assert_eq!(f.v(), &[30; 2]);
    }

    #[test]
    fn from_strided_drops_padding() {
        // 2x2 frame; Y rows padded to 4 bytes, chroma rows to 3.
        let y = [1, 2, 9, 9, 3, 4, 9, 9];
        let u = [5, 9, 9];
        let v = [6, 9, 9];
        let f = I420Frame::from_strided(2, 2, &y, 4, &u, 3, &v, 3).unwrap();
        assert_eq!(f.as_bytes(), &[1, 2, 3, 4, 5, 6]);
        assert!(I420Frame::from_strided(2, 2, &y[..5], 4, &u, 3, &v, 3).is_err());
    }
}
