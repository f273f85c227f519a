//! facerelay: a WebRTC relay that swaps faces in live video.
//!
//! Data flow of one published video stream:
//!
//! ```text
//! browser ──H.264 RTP──▶ rtc (ingest: RTP → access units)
//!         ──▶ media (decode, on codec threads) ──I420──▶ FrameStage (swap)
//!         ──▶ media (encode, once per stream) ──▶ rtc (egress: fan-out to every subscriber)
//! Opus RTP ─────────────────────────────────────▶ forwarded unchanged
//!          (a speaker with a voice chosen: voice (decode ▸ disguise ▸ encode), fail-closed)
//! ```
//!
//! Modules, by layer from the top; a module uses only modules of the layers after its own
//! (`tests/it/layering.rs` reads this list and checks every `crate::` path under `src/`, unit
//! tests aside):
//!
//! layers: `cli` → `testkit`, `fuzzing` → `app` → `signal` → `cluster` → `room` → `rtc` → `verify` → `config` → `swap` → `infer` → `media` → `voice` → `metrics`
//!
//! - `cli`: the programs beside `serve` (`swap`, `models`, the benchmarks).
//! - `testkit`: a participant in Rust (signalling client) for the tests and benches;
//!   `fuzzing`: the fuzz targets' entry points.
//! - `app`: builds a node from its configuration.
//! - `signal`: the HTTP and WebSocket edge (signalling sessions, the face API, `/metrics`).
//! - `cluster`: where rooms live when several nodes share them (Redis), or this node alone.
//! - `room`: rooms, participants and the roulette matchmaker.
//! - `rtc`: WebRTC transport, the only user of the `webrtc` crate.
//! - `verify`: whether a file was swapped by facerelay (watermark and bitstream mark).
//! - `config`: the validated configuration (it assembles the sections `swap` and `infer`
//!   define).
//! - `swap`: the face pipeline, live and offline.
//! - `infer`: ONNX Runtime sessions and the batching schedulers.
//! - `media`: frames, H.264 (Annex-B helpers, openh264) and the per-stream pipeline.
//! - `voice`: voice disguise (Opus decode, pitch and formants moved, Opus encode), fail-closed.
//! - `metrics`: the metrics registry.

pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod fuzzing;
pub mod infer;
pub mod media;
pub mod metrics;
pub mod room;
pub mod rtc;
pub mod signal;
pub mod swap;
pub mod testkit;
pub mod verify;
pub mod voice;
