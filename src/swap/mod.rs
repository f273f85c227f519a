//! The face pipeline (detect, align, swap, paste) as pure functions over frames and tensors.

use serde::Deserialize;

/// `[swap]` section of the configuration (placeholder until the swap engine lands).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SwapConfig {}
