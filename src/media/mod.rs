//! Frames and codecs: I420 frames, H.264 decode/encode with openh264, the per-stream video
//! pipeline that runs them off tokio's threads, and the frame-stage seam. Nothing here touches
//! the network.

mod codec;
pub mod container;
mod frame;
pub mod h264;
pub mod pipeline;
pub mod sei;
mod stage;
pub mod synthetic;
pub mod watermark;
pub mod xmp;

pub use codec::{y_psnr, CodecError, EncodedFrame, EncoderSettings, VideoDecoder, VideoEncoder};
pub use frame::{FrameError, I420Frame};
pub use stage::{FrameStage, IdentityStage, StreamId, StreamProcessor};
