//! ONNX Runtime environment, execution providers, model loading and validation.

use serde::Deserialize;

/// `[models]` section of the configuration (placeholder until the swap engine lands).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {}
