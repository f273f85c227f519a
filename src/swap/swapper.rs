//! The deep face swappers, one interface over several model families, each with its contract:
//! the side of its aligned crop, the five-point template the crop is aligned to, how its input
//! pixels are scaled, the scale of what it returns, and the identity it takes. Callers hand crops
//! and get crops back in planar RGB in [0,1]; the scaling to and from the model's own range is
//! done here.
//!
//! | `swap.swapper` | crop | template | input | output | identity (`source`) |
//! |---|---|---|---|---|---|
//! | `inswapper_128` | 128 | arcface 128 | [0,1] | [0,1] | `normalise(e · emap)`, emap the file's last initializer |
//! | `hyperswap_1a_256`, `_1b_`, `_1c_` | 256 | arcface 128 | [−1,1] | [−1,1] | the unit ArcFace embedding `e` |
//! | `simswap_256` | 256 | arcface 112 v1 | ImageNet mean/std | [0,1] | `normalise(converter(e))`, `crossface_simswap.onnx` |
//!
//! Inputs are named `target` (N×3×S×S) and `source` (N×512); the output is `output` for
//! inswapper and the first output otherwise. A file whose batch dimension is symbolic takes
//! several faces per run.

use ort::value::TensorRef;

use super::geometry::{arcface_template, Point};
use super::identity::EMBEDDING_LEN;
use super::SwapError;
use crate::infer::bound::{BoundIo, HostMemory, Input};
use crate::infer::{
    Dim, InferError, Model, ModelSpec, ModelsConfig, Provider, Runtime, TensorSpec,
};

/// The five-point template a swapper's crop is aligned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// insightface's ArcFace template for a crop that is a multiple of 128 px (the 112 px one
    /// scaled, shifted 8 px in x per 128).
    Arcface128,
    /// The older ArcFace template SimSwap was trained with.
    Arcface112V1,
}

/// SimSwap's template at 1 px (fractions of the crop side).
const ARCFACE_112_V1: [Point; 5] = [
    [0.354_732_14, 0.456_589_29],
    [0.645_267_86, 0.456_589_29],
    [0.5, 0.611_544_64],
    [0.379_133_93, 0.776_875],
    [0.620_866_07, 0.776_875],
];

impl Template {
    /// The five points (eyes, nose tip, mouth corners) in a crop of `size` px.
    pub fn points(self, size: usize) -> [Point; 5] {
        match self {
            Template::Arcface128 => arcface_template(size as u32),
            Template::Arcface112V1 => {
                let s = size as f32;
                ARCFACE_112_V1.map(|[x, y]| [x * s, y * s])
            }
        }
    }
}

/// What a swapper takes as its `source` input, from the source face's ArcFace embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    /// `normalise(e · emap)`: the swapper file's last initializer is the 512×512 emap.
    Emap,
    /// The unit embedding itself.
    Embedding,
    /// `normalise(converter(ArcFace output))`, the converter a model file of its own (run once
    /// per source face).
    Converted { converter: &'static str },
}

/// One swapper family's contract.
#[derive(Debug, Clone, Copy)]
pub struct Contract {
    /// The `swap.swapper` value and the file's stem (`<name>.onnx` in `models.dir`).
    pub name: &'static str,
    /// Side of the aligned crop, pixels.
    pub size: usize,
    pub template: Template,
    /// Input pixels are `(x − mean) / std` per RGB channel, for x in [0,1].
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// The output is on the input's scale (mapped back with `x · std + mean`); else in [0,1].
    pub output_scaled: bool,
    pub identity: IdentityKind,
    /// The file's inputs and outputs, checked at load.
    pub spec: &'static ModelSpec,
}

const UNIT: ([f32; 3], [f32; 3]) = ([0.0; 3], [1.0; 3]);
const HALF: ([f32; 3], [f32; 3]) = ([0.5; 3], [0.5; 3]);
const IMAGENET: ([f32; 3], [f32; 3]) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);

const fn crop(size: i64) -> [Dim; 4] {
    [
        Dim::Fixed(1),
        Dim::Fixed(3),
        Dim::Fixed(size),
        Dim::Fixed(size),
    ]
}
const CROP_128: &[Dim] = &crop(128);
const CROP_256: &[Dim] = &crop(256);
const SOURCE: &[Dim] = &[Dim::Fixed(1), Dim::Fixed(EMBEDDING_LEN as i64)];

/// inswapper's contract, by name as every peer uses it.
pub static SWAPPER_SPEC: ModelSpec = ModelSpec {
    role: "swapper",
    inputs: &[
        TensorSpec::named("target", CROP_128),
        TensorSpec::named("source", SOURCE),
    ],
    outputs: &[TensorSpec::named("output", CROP_128)],
};

/// The 256 px families: named inputs, one output whatever its name.
static SPEC_256: ModelSpec = ModelSpec {
    role: "swapper",
    inputs: &[
        TensorSpec::named("target", CROP_256),
        TensorSpec::named("source", SOURCE),
    ],
    outputs: &[TensorSpec::positional(CROP_256)],
};

const fn hyperswap(name: &'static str) -> Contract {
    Contract {
        name,
        size: 256,
        template: Template::Arcface128,
        mean: HALF.0,
        std: HALF.1,
        output_scaled: true,
        identity: IdentityKind::Embedding,
        spec: &SPEC_256,
    }
}

pub const INSWAPPER_128: Contract = Contract {
    name: "inswapper_128",
    size: 128,
    template: Template::Arcface128,
    mean: UNIT.0,
    std: UNIT.1,
    output_scaled: false,
    identity: IdentityKind::Emap,
    spec: &SWAPPER_SPEC,
};

pub const SIMSWAP_256: Contract = Contract {
    name: "simswap_256",
    size: 256,
    template: Template::Arcface112V1,
    mean: IMAGENET.0,
    std: IMAGENET.1,
    output_scaled: false,
    identity: IdentityKind::Converted {
        converter: "crossface_simswap.onnx",
    },
    spec: &SPEC_256,
};

/// Every deep swapper, in the order `swap.swapper = "auto"` looks for their files.
pub static CONTRACTS: [Contract; 5] = [
    INSWAPPER_128,
    hyperswap("hyperswap_1a_256"),
    hyperswap("hyperswap_1b_256"),
    hyperswap("hyperswap_1c_256"),
    SIMSWAP_256,
];

/// One family is one name.
impl PartialEq for Contract {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Contract {
    /// The family `swap.swapper` names (`inswapper` is inswapper_128's older name).
    pub fn by_name(name: &str) -> Option<&'static Contract> {
        let name = if name == "inswapper" {
            INSWAPPER_128.name
        } else {
            name
        };
        CONTRACTS.iter().find(|c| c.name == name)
    }

    /// The file's default name in `models.dir`.
    pub fn file(&self) -> String {
        format!("{}.onnx", self.name)
    }

    /// The swapper file: `models.swapper` when set, else [`Contract::file`] in `models.dir`.
    pub fn path(&self, models: &ModelsConfig) -> std::path::PathBuf {
        if models.swapper.is_empty() {
            models.dir.join(self.file())
        } else {
            models.dir.join(&models.swapper)
        }
    }

    /// Whether the file at `path`, to be this family's file `name` (its swapper or its
    /// embedding converter), is what the contract expects: loaded on the CPU and checked as
    /// `serve` checks it at start-up.
    pub fn check_file(
        &self,
        models: &ModelsConfig,
        name: &str,
        path: &std::path::Path,
    ) -> Result<(), String> {
        let spec = if name == self.file() {
            self.spec
        } else if self.converter() == Some(name) {
            &super::identity::CONVERTER_SPEC
        } else {
            return Err(format!("{name} is no file of {}", self.name));
        };
        let mut cpu = models.clone();
        cpu.provider = Provider::Cpu;
        let rt = crate::infer::runtime(&cpu).map_err(|e| e.to_string())?;
        Model::load(rt, &cpu, path, spec)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// The embedding converter's file name, for a family whose identity needs one.
    pub fn converter(&self) -> Option<&'static str> {
        match self.identity {
            IdentityKind::Converted { converter } => Some(converter),
            _ => None,
        }
    }

    /// Every file this swapper runs on: the detector, the recognizer, the swapper and, where
    /// the identity needs one, the embedding converter.
    pub fn files(&self, models: &ModelsConfig) -> Vec<std::path::PathBuf> {
        let mut files = vec![
            models.detector_path(),
            models.recognizer_path(),
            self.path(models),
        ];
        files.extend(self.converter().map(|c| models.dir.join(c)));
        files
    }

    /// Values of one crop (3 × size × size).
    pub fn crop_len(&self) -> usize {
        3 * self.size * self.size
    }

    /// Pixels of the crop side in the 128 px units `swap.mask_erode_px` and `mask_blur_px` are
    /// given in.
    pub fn scale_128(&self, px: f32) -> f32 {
        px * self.size as f32 / 128.0
    }
}

impl Contract {
    /// Crops in [0,1] (planar RGB, one after the other) onto the model's input scale, in place.
    pub fn to_model_scale(&self, crops: &mut [f32]) {
        if (self.mean, self.std) != UNIT {
            for_channels(crops, self.size, |v, ch| (v - self.mean[ch]) / self.std[ch]);
        }
    }

    /// The file the swapper runs: its own, or a variant `facerelay models prepare` wrote and
    /// verified ([`crate::infer::prepared::runtime_path`]).
    pub fn runtime_path(&self, models: &ModelsConfig) -> std::path::PathBuf {
        crate::infer::prepared::runtime_path(models, self.path(models), "swapper")
    }
}

pub struct Swapper {
    model: Model,
    /// The output read: `output` for inswapper, the first output otherwise.
    output: String,
    contract: &'static Contract,
    /// The batch's crops on the model's scale (when it is not [0,1]).
    input: Vec<f32>,
    /// Bound host buffers (GPU providers), else a plain run.
    bound: Option<BoundIo>,
}

impl Swapper {
    /// Loads the swapper file at `path` and checks it against `contract`.
    pub fn load(
        rt: &Runtime,
        config: &ModelsConfig,
        path: &std::path::Path,
        contract: &'static Contract,
    ) -> Result<Self, SwapError> {
        let model = Model::load(rt, config, path, contract.spec)?;
        Ok(Self {
            output: model.output_names()[0].clone(),
            bound: BoundIo::for_provider(&model, config)?,
            model,
            contract,
            input: Vec::new(),
        })
    }

    /// Runs through buffers of `memory` bound to the model's inputs and output
    /// ([`crate::infer::bound`]); `load` does this with pinned memory on the GPU providers.
    pub fn bind_host_memory(&mut self, memory: HostMemory) -> Result<(), SwapError> {
        self.bound = Some(BoundIo::new(&self.model, memory)?);
        Ok(())
    }

    /// Whether runs go through bound host buffers (not since they failed, if they did).
    pub fn is_bound(&self) -> bool {
        self.bound.is_some()
    }

    pub fn contract(&self) -> &'static Contract {
        self.contract
    }

    /// Whether the file takes several faces in one run (a symbolic batch dimension, as the
    /// variants `facerelay` tests with have; the public files are fixed at 1).
    pub fn dynamic_batch(&self) -> bool {
        self.model.dynamic_batch()
    }

    /// Runs one face: `target` planar RGB 3×S×S in [0,1], `source` the identity input of 512.
    /// Writes the swapped crop (same layout, in [0,1]) into `out`.
    pub fn swap(
        &mut self,
        target: &[f32],
        source: &[f32],
        out: &mut [f32],
    ) -> Result<(), SwapError> {
        self.swap_many(target, source, out)
    }

    /// Runs `n` faces in one call (`n` > 1 only for a model with a dynamic batch dimension):
    /// `targets` holds `n` crops one after the other, `sources` `n` identity inputs, `out`
    /// receives the `n` swapped crops in the same order.
    pub fn swap_many(
        &mut self,
        targets: &[f32],
        sources: &[f32],
        out: &mut [f32],
    ) -> Result<(), SwapError> {
        let c = self.contract;
        let (size, len) = (c.size, c.crop_len());
        let n = sources.len() / EMBEDDING_LEN;
        if n == 0 || sources.len() != n * EMBEDDING_LEN || targets.len() != n * len {
            return Err(SwapError::ModelOutput(format!(
                "swapper input of {} crop values and {} source values is not a whole number of faces",
                targets.len(),
                sources.len()
            )));
        }
        let unit = (c.mean, c.std) == UNIT;
        if !unit {
            self.input.clear();
            self.input.extend_from_slice(targets);
            c.to_model_scale(&mut self.input);
        }
        let pixels = if unit { targets } else { &self.input };
        let mut bound_done = false;
        if let Some(bound) = &mut self.bound {
            let crops = [n, 3, size, size];
            let inputs = [
                Input {
                    name: "target",
                    shape: &crops,
                    data: pixels,
                },
                Input {
                    name: "source",
                    shape: &[n, EMBEDDING_LEN],
                    data: sources,
                },
            ];
            match bound.run(&mut self.model, n, &inputs, &[(&self.output, &crops)]) {
                Ok(data) if data[0].len() == out.len() => {
                    out.copy_from_slice(data[0]);
                    bound_done = true;
                }
                Ok(data) => {
                    return Err(SwapError::ModelOutput(format!(
                        "swapper returned {} values, expected {}",
                        data[0].len(),
                        out.len()
                    )))
                }
                // Bound buffers have run on no GPU yet: one that refuses them is not a reason
                // to fail every frame. Plain runs from here on, said once.
                Err(e) => {
                    tracing::warn!(error = %e, "the swapper's bound host buffers failed: plain runs from now on");
                    self.bound = None;
                }
            }
        }
        if !bound_done {
            let t = TensorRef::from_array_view(([n, 3, size, size], pixels))
                .map_err(|e| self.model.run_error(e))?;
            let s = TensorRef::from_array_view(([n, EMBEDDING_LEN], sources))
                .map_err(|e| self.model.run_error(e))?;
            let outputs = self
                .model
                .session_mut()
                .run(ort::inputs!["target" => t, "source" => s])
                .map_err(|e| InferError::Run {
                    role: "swapper",
                    message: e.to_string(),
                })?;
            let value = outputs.get(self.output.as_str()).ok_or_else(|| {
                SwapError::ModelOutput(format!("swapper returned no `{}`", self.output))
            })?;
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
        }
        if c.output_scaled {
            for_channels(out, size, |v, ch| v * c.std[ch] + c.mean[ch]);
        }
        for v in out.iter_mut() {
            *v = v.clamp(0.0, 1.0);
        }
        Ok(())
    }
}

/// Applies `f(value, channel)` to planar RGB crops of `size` px laid one after the other.
fn for_channels(data: &mut [f32], size: usize, f: impl Fn(f32, usize) -> f32) {
    let plane = size * size;
    for (i, chunk) in data.chunks_exact_mut(plane).enumerate() {
        let ch = i % 3;
        for v in chunk {
            *v = f(*v, ch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_place_the_five_points_as_each_family_was_trained() {
        // arcface 128 at 256 px: the 112 px template doubled... of 128, shifted 16 px.
        let t = Template::Arcface128.points(256);
        assert!((t[0][0] - (38.2946 * 2.0 + 16.0)).abs() < 1e-3, "{t:?}");
        assert!((t[0][1] - 51.6963 * 2.0).abs() < 1e-3, "{t:?}");
        assert_eq!(Template::Arcface128.points(128), arcface_template(128));
        // SimSwap's template: symmetric eyes and mouth, the nose on the centre line.
        let v1 = Template::Arcface112V1.points(256);
        assert!((v1[0][0] - 90.8114).abs() < 1e-3 && (v1[1][0] - 165.1886).abs() < 1e-3);
        assert_eq!(v1[0][1], v1[1][1]);
        assert_eq!(v1[2][0], 128.0);
        assert_eq!(v1[3][1], v1[4][1]);
    }

    #[test]
    fn every_family_is_found_by_name_with_its_file() {
        for c in &CONTRACTS {
            assert_eq!(Contract::by_name(c.name), Some(c));
            assert_eq!(c.file(), format!("{}.onnx", c.name));
        }
        assert_eq!(Contract::by_name("hyperswap_1b_256").unwrap().size, 256);
        assert!(Contract::by_name("ghost_1_256").is_none());
        assert_eq!(INSWAPPER_128.crop_len(), 3 * 128 * 128);
        assert_eq!(SIMSWAP_256.scale_128(6.0), 12.0);
    }

    #[test]
    fn channels_are_scaled_plane_by_plane() {
        // Two crops of 1 px: R, G, B, R, G, B.
        let mut d = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0];
        for_channels(&mut d, 1, |v, ch| v * 10.0 + ch as f32);
        assert_eq!(d, [10.0, 11.0, 12.0, 0.0, 1.0, 2.0]);
    }
}
