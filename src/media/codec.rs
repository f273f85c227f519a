//! H.264 decode and encode with openh264 (bundled OpenH264, built from source).
//!
//! The encoder produces what every browser decodes: constrained baseline (no B-frames, CAVLC),
//! level 3.1, Annex-B with SPS/PPS in front of every IDR, real-time camera rate control.

use openh264::decoder::{Decoder, DecoderConfig};
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Level,
    Profile, RateControlMode, SpsPpsStrategy, UsageType,
};
use openh264::formats::YUVSource;
use openh264::OpenH264API;

use super::I420Frame;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("H.264 decoder: {0}")]
    Decode(String),
    #[error("H.264 encoder: {0}")]
    Encode(String),
    #[error("frame {width}x{height} exceeds the limit of {max_pixels} pixels")]
    TooLarge {
        width: u32,
        height: u32,
        max_pixels: u32,
    },
    #[error("decoded frame has odd dimensions {0}x{1}")]
    OddDimensions(u32, u32),
}

/// Decodes one stream's access units into I420 frames.
pub struct VideoDecoder {
    decoder: Decoder,
    max_pixels: u32,
}

impl VideoDecoder {
    pub fn new(max_pixels: u32) -> Result<Self, CodecError> {
        let decoder = Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
            .map_err(|e| CodecError::Decode(e.to_string()))?;
        Ok(Self {
            decoder,
            max_pixels,
        })
    }

    /// Decodes one Annex-B access unit. `Ok(None)` when the decoder produced no picture (SPS/PPS
    /// only, or it is still buffering).
    pub fn decode(&mut self, access_unit: &[u8]) -> Result<Option<I420Frame>, CodecError> {
        let decoded = self
            .decoder
            .decode(access_unit)
            .map_err(|e| CodecError::Decode(e.to_string()))?;
        let Some(yuv) = decoded else {
            return Ok(None);
        };
        let (w, h) = yuv.dimensions();
        let (width, height) = (w as u32, h as u32);
        if u64::from(width) * u64::from(height) > u64::from(self.max_pixels) {
            return Err(CodecError::TooLarge {
                width,
                height,
                max_pixels: self.max_pixels,
            });
        }
        if width % 2 != 0 || height % 2 != 0 {
            return Err(CodecError::OddDimensions(width, height));
        }
        let (ys, us, vs) = yuv.strides();
        I420Frame::from_strided(width, height, yuv.y(), ys, yuv.u(), us, yuv.v(), vs)
            .map(Some)
            .map_err(|e| CodecError::Decode(e.to_string()))
    }
}

/// Encoder settings taken from the `[media]` configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderSettings {
    pub bitrate_bps: u32,
    pub max_frame_rate: f32,
    /// Frames between periodic IDRs; 0 = only on request.
    pub keyframe_interval: u32,
}

/// One encoded frame.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    /// Annex-B bytes (SPS + PPS + IDR on keyframes).
    pub data: Vec<u8>,
    pub keyframe: bool,
}

/// Encodes one published stream.
pub struct VideoEncoder {
    encoder: Encoder,
}

impl VideoEncoder {
    pub fn new(settings: EncoderSettings) -> Result<Self, CodecError> {
        let config = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .level(Level::Level_3_1)
            .bitrate(BitRate::from_bps(settings.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(settings.max_frame_rate))
            .rate_control_mode(RateControlMode::Bitrate)
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            .complexity(Complexity::Low)
            // Dropping frames inside the encoder would make the relay's own drop accounting lie.
            .skip_frames(false)
            // Keyframes come only when a subscriber joins or asks, or every `keyframe_interval`
            // frames: an I-frame at each cut would be a burst every subscriber receives and
            // none asked for (a cut still decodes, as a P-frame of intra blocks).
            .scene_change_detect(false)
            .intra_frame_period(IntraFramePeriod::from_num_frames(
                settings.keyframe_interval,
            ))
            .num_threads(1);
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| CodecError::Encode(e.to_string()))?;
        Ok(Self { encoder })
    }

    /// Encodes a frame; `force_idr` makes it a keyframe (a subscriber joined or asked).
    pub fn encode(
        &mut self,
        frame: &I420Frame,
        force_idr: bool,
    ) -> Result<EncodedFrame, CodecError> {
        if force_idr {
            self.encoder.force_intra_frame();
        }
        let bitstream = self
            .encoder
            .encode(frame)
            .map_err(|e| CodecError::Encode(e.to_string()))?;
        let keyframe = matches!(bitstream.frame_type(), FrameType::IDR | FrameType::I);
        Ok(EncodedFrame {
            data: bitstream.to_vec(),
            keyframe,
        })
    }
}

impl YUVSource for I420Frame {
    fn dimensions(&self) -> (usize, usize) {
        (self.width() as usize, self.height() as usize)
    }

    fn strides(&self) -> (usize, usize, usize) {
        (self.y_stride(), self.uv_stride(), self.uv_stride())
    }

    fn y(&self) -> &[u8] {
        I420Frame::y(self)
    }

    fn u(&self) -> &[u8] {
        I420Frame::u(self)
    }

    fn v(&self) -> &[u8] {
        I420Frame::v(self)
    }
}

/// Luma PSNR in dB between two frames of equal size (`f64::INFINITY` when identical).
pub fn y_psnr(a: &I420Frame, b: &I420Frame) -> Option<f64> {
    if a.width() != b.width() || a.height() != b.height() {
        return None;
    }
    let sse: u64 = I420Frame::y(a)
        .iter()
        .zip(I420Frame::y(b))
        .map(|(&x, &y)| {
            let d = x as i64 - y as i64;
            (d * d) as u64
        })
        .sum();
    if sse == 0 {
        return Some(f64::INFINITY);
    }
    let mse = sse as f64 / I420Frame::y(a).len() as f64;
    Some(10.0 * (255.0 * 255.0 / mse).log10())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(w: u32, h: u32, t: u32) -> I420Frame {
        let mut f = I420Frame::filled(w, h, 0, 128, 128).unwrap();
        let (y, _, _) = f.planes_mut();
        for row in 0..h {
            for col in 0..w {
                y[(row * w + col) as usize] = ((col + row + t * 3) % 256) as u8;
            }
        }
        f
    }

    #[test]
    fn encode_decode_round_trip_keeps_the_picture() {
        let settings = EncoderSettings {
            bitrate_bps: 2_000_000,
            max_frame_rate: 30.0,
            keyframe_interval: 0,
        };
        let mut enc = VideoEncoder::new(settings).unwrap();
        let mut dec = VideoDecoder::new(1920 * 1080).unwrap();
        let mut psnrs = vec![];
        for t in 0..10 {
            let frame = pattern(320, 240, t);
            let encoded = enc.encode(&frame, false).unwrap();
            assert_eq!(encoded.keyframe, t == 0, "frame {t}");
            assert_eq!(crate::media::h264::is_keyframe(&encoded.data), t == 0);
            let decoded = dec
                .decode(&encoded.data)
                .unwrap()
                .expect("a picture per frame");
            psnrs.push(y_psnr(&frame, &decoded).unwrap());
        }
        assert!(psnrs.iter().all(|&p| p > 30.0), "{psnrs:?}");
        let forced = enc.encode(&pattern(320, 240, 11), true).unwrap();
        assert!(forced.keyframe);
    }

    #[test]
    fn a_cut_is_no_keyframe_unless_asked() {
        let mut enc = VideoEncoder::new(EncoderSettings {
            bitrate_bps: 1_500_000,
            max_frame_rate: 30.0,
            keyframe_interval: 0,
        })
        .unwrap();
        let mut dec = VideoDecoder::new(1920 * 1080).unwrap();
        // A moving picture that jumps far ahead twice (a cut).
        let numbers = (1000..1030).chain(40_000..40_030).chain(10..40);
        for (i, n) in numbers.enumerate() {
            let frame = crate::media::synthetic::numbered_frame(640, 480, n);
            let encoded = enc.encode(&frame, false).unwrap();
            assert_eq!(encoded.keyframe, i == 0, "frame {n}");
            let decoded = dec.decode(&encoded.data).unwrap().expect("a picture");
            let psnr = y_psnr(&frame, &decoded).unwrap();
            assert!(psnr > 25.0, "frame {n}: {psnr:.1} dB");
        }
    }

    #[test]
    fn decoder_rejects_garbage_and_oversized_frames() {
        let mut dec = VideoDecoder::new(1920 * 1080).unwrap();
        // Garbage either errors or yields nothing; it must not panic.
        let _ = dec.decode(&[0, 0, 0, 1, 0x65, 0xFF, 0x00, 0x12]);
        let _ = dec.decode(&[]);

        let mut enc = VideoEncoder::new(EncoderSettings {
            bitrate_bps: 500_000,
            max_frame_rate: 30.0,
            keyframe_interval: 0,
        })
        .unwrap();
        let encoded = enc.encode(&pattern(320, 240, 0), false).unwrap();
        let mut small = VideoDecoder::new(160 * 120).unwrap();
        assert!(matches!(
            small.decode(&encoded.data),
            Err(CodecError::TooLarge { .. })
        ));
    }
}
