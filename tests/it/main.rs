//! Integration tests: one binary, the server in-process on 127.0.0.1 with ephemeral ports.

mod browser;
mod cluster;
mod deploy;
mod faces;
mod layering;
mod live;
mod live_relay;
mod mesh;
mod models;
mod real_faces;
mod relay;
mod signalling;
mod support;
mod swap;
mod swappers;
mod tokens;
mod voice;
mod whip;
