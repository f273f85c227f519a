//! The programs of the `facerelay` command beside `serve`: `swap` and `models` (the swap engine
//! offline), `token` (join tokens), and the benchmarks (`bench …`), which print figures and JSON and never fail
//! because a machine is slow. `main.rs` parses the command line and dispatches here; nothing
//! in the library imports this module.

pub mod bench;
pub mod prepare;
pub mod swap;
pub mod token;
