//! The face swapper (`inswapper_128.onnx`): `target` 1×3×128×128 RGB in [0,1] and `source`
//! 1×512 latent in, `output` 1×3×128×128 in [0,1] out. A file whose batch dimension is
//! symbolic (N×…) takes several faces per run.

use ort::value::TensorRef;

use super::identity::EMBEDDING_LEN;
use super::SwapError;
use crate::infer::{Dim, InferError, Model, ModelSpec, ModelsConfig, Runtime, TensorSpec};

/// Side of the swapper's aligned crop.
pub const SWAP_SIZE: usize = 128;

const CROP: &[Dim] = &[
    Dim::Fixed(1),
    Dim::Fixed(3),
    Dim::Fixed(128),
    Dim::Fixed(128),
];

/// The swapper's contract, by name as every peer uses it.
pub static SWAPPER_SPEC: ModelSpec = ModelSpec {
    role: "swapper",
    inputs: &[
        TensorSpec::named("target", CROP),
        TensorSpec::named("source", &[Dim::Fixed(1), Dim::Fixed(EMBEDDING_LEN as i64)]),
    ],
    outputs: &[TensorSpec::named("output", CROP)],
};

pub struct Swapper {
    model: Model,
}

impl Swapper {
    pub fn load(
        rt: &Runtime,
        config: &ModelsConfig,
        path: &std::path::Path,
    ) -> Result<Self, SwapError> {
        Ok(Self {
            model: Model::load(rt, config, path, &SWAPPER_SPEC)?,
        })
    }

    /// Whether the file takes several faces in one run (a symbolic batch dimension, as the
    /// variants `facerelay` tests with have; the public file is fixed at 1).
    pub fn dynamic_batch(&self) -> bool {
        self.model.dynamic_batch()
    }

    /// Runs one face: `target` planar RGB 3×128×128 in [0,1], `latent` of 512. Writes the
    /// swapped crop (same layout) into `out`.
    pub fn swap(
        &mut self,
        target: &[f32],
        latent: &[f32],
        out: &mut [f32],
    ) -> Result<(), SwapError> {
        self.swap_many(target, latent, out)
    }

    /// Runs `n` faces in one call (`n` > 1 only for a model with a dynamic batch dimension):
    /// `targets` holds `n` crops one after the other, `latents` `n` latents, `out` receives the
    /// `n` swapped crops in the same order.
    pub fn swap_many(
        &mut self,
        targets: &[f32],
        latents: &[f32],
        out: &mut [f32],
    ) -> Result<(), SwapError> {
        let crop = 3 * SWAP_SIZE * SWAP_SIZE;
        let n = latents.len() / EMBEDDING_LEN;
        if n == 0 || latents.len() != n * EMBEDDING_LEN || targets.len() != n * crop {
            return Err(SwapError::ModelOutput(format!(
                "swapper input of {} crop values and {} latent values is not a whole number of faces",
                targets.len(),
                latents.len()
            )));
        }
        let t = TensorRef::from_array_view(([n, 3, SWAP_SIZE, SWAP_SIZE], targets))
            .map_err(|e| self.model.run_error(e))?;
        let s = TensorRef::from_array_view(([n, EMBEDDING_LEN], latents))
            .map_err(|e| self.model.run_error(e))?;
        let outputs = self
            .model
            .session_mut()
            .run(ort::inputs!["target" => t, "source" => s])
            .map_err(|e| InferError::Run {
                role: "swapper",
                message: e.to_string(),
            })?;
        let value = outputs
            .get("output")
            .ok_or_else(|| SwapError::ModelOutput("swapper returned no `output`".into()))?;
        let (_, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| SwapError::ModelOutput(e.to_string()))?;
        if data.len() != out.len() {
            return Err(SwapError::ModelOutput(format!(
                "swapper returned {} values, expected {}",
                data.len(),
                out.len()
            )));
        }
        out.copy_from_slice(data);
        Ok(())
    }
}
