//! facerelay: a WebRTC relay that swaps faces in live video.
//!
//! Data flow of one published video stream:
//!
//! ```text
//! browser ──H.264 RTP──▶ rtc (ingest: RTP → access units)
//!         ──▶ media (decode, on codec threads) ──I420──▶ FrameStage (swap)
//!         ──▶ media (encode, once per stream) ──▶ rtc (egress: fan-out to every subscriber)
//! Opus RTP ─────────────────────────────────────▶ forwarded unchanged
//! ```
//!
//! Modules, dependencies pointing one way (`signal → room → rtc, media, swap → infer`):
//! `signal` (HTTP + WebSocket edge), `room` (rooms, participants and the roulette
//! matchmaker), `rtc` (the only user of the `webrtc` crate), `media` (frames and codecs),
//! `swap` (face pipeline), `infer` (ONNX Runtime), `config` (validated configuration).

pub mod app;
pub mod bench;
pub mod config;
pub mod fuzzing;
pub mod infer;
pub mod media;
pub mod metrics;
pub mod room;
pub mod rtc;
pub mod signal;
pub mod swap;
pub mod verify;
