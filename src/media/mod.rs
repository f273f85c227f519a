//! Frames and codecs: I420 frames, H.264 decode/encode with openh264, and the frame-stage seam.
//! Nothing here touches the network.

mod frame;
mod stage;

pub use frame::{FrameError, I420Frame};
pub use stage::{FrameStage, IdentityStage, StreamId, StreamProcessor};
