//! Identity: the ArcFace embedding (`w600k_r50.onnx`) of an aligned 112 px face, and what the
//! running swapper takes of it as its `source` input ([`IdentityMap`]): inswapper's latent
//! `normalise(normalise(embedding) · emap)`, with `emap` the 512x512 matrix stored as the
//! swapper's last initializer; hyperswap's unit embedding; simswap's converted embedding.

use ort::value::TensorRef;

use std::sync::Mutex;

use super::swapper::{Contract, IdentityKind};
use super::SwapError;
use crate::infer::{Dim, Model, ModelSpec, ModelsConfig, Runtime, TensorSpec};

/// Length of ArcFace embeddings and of the swapper's latent.
pub const EMBEDDING_LEN: usize = 512;
/// Side of ArcFace's aligned input.
pub const ARCFACE_SIZE: usize = 112;

/// ArcFace: N×3×112×112 in, N×512 out (names vary between exports; read by position).
pub static RECOGNIZER_SPEC: ModelSpec = ModelSpec {
    role: "recognizer",
    inputs: &[TensorSpec::positional(&[
        Dim::Fixed(1),
        Dim::Fixed(3),
        Dim::Fixed(112),
        Dim::Fixed(112),
    ])],
    outputs: &[TensorSpec::positional(&[
        Dim::Fixed(1),
        Dim::Fixed(EMBEDDING_LEN as i64),
    ])],
};

/// A unit-length identity embedding, with the length of the model output it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding(Vec<f32>, f32);

impl Embedding {
    /// Normalises a raw model output; `None` when it is not 512 finite values with a norm.
    pub fn from_raw(raw: &[f32]) -> Option<Self> {
        if raw.len() != EMBEDDING_LEN {
            return None;
        }
        let unit = normalised(raw)?;
        Some(Self(unit, norm(raw) as f32))
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }

    /// The model output it came from (the unit vector times its length).
    pub fn raw(&self) -> Vec<f32> {
        self.0.iter().map(|v| v * self.1).collect()
    }

    /// Cosine similarity (both are unit length).
    pub fn similarity(&self, other: &Embedding) -> f32 {
        self.0.iter().zip(&other.0).map(|(a, b)| a * b).sum()
    }
}

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt()
}

fn normalised(v: &[f32]) -> Option<Vec<f32>> {
    let norm = norm(v);
    if !norm.is_finite() || norm < 1e-12 {
        return None;
    }
    Some(v.iter().map(|x| (f64::from(*x) / norm) as f32).collect())
}

/// The swapper's emap: a square matrix, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Emap {
    n: usize,
    data: Vec<f32>,
}

impl Emap {
    pub fn new(n: usize, data: Vec<f32>) -> Option<Self> {
        (n > 0 && data.len() == n * n && data.iter().all(|v| v.is_finite()))
            .then_some(Self { n, data })
    }

    /// Reads the emap out of the swapper's ONNX file (its last graph initializer).
    pub fn from_model_file(path: &std::path::Path) -> Result<Self, SwapError> {
        let t = crate::infer::onnx_proto::last_initializer(path)
            .map_err(|e| SwapError::Emap(format!("{}: {e}", path.display())))?;
        let n = EMBEDDING_LEN as i64;
        if t.dims != [n, n] {
            return Err(SwapError::Emap(format!(
                "{}: the last initializer `{}` has dims {:?}, expected [512, 512] (is this inswapper_128?)",
                path.display(),
                t.name,
                t.dims
            )));
        }
        Self::new(EMBEDDING_LEN, t.data).ok_or_else(|| {
            SwapError::Emap(format!("{}: emap has non-finite values", path.display()))
        })
    }

    pub fn get(&self, row: usize, col: usize) -> Option<f32> {
        (row < self.n && col < self.n).then(|| self.data[row * self.n + col])
    }

    /// The swapper's source latent: `normalise(e · emap)` for a unit embedding `e` (row vector).
    pub fn latent(&self, e: &Embedding) -> Option<Vec<f32>> {
        if e.0.len() != self.n {
            return None;
        }
        let mut out = vec![0f64; self.n];
        for (i, &ei) in e.0.iter().enumerate() {
            let row = &self.data[i * self.n..(i + 1) * self.n];
            for (o, &m) in out.iter_mut().zip(row) {
                *o += f64::from(ei) * f64::from(m);
            }
        }
        let out: Vec<f32> = out.into_iter().map(|v| v as f32).collect();
        normalised(&out)
    }
}

/// What the running swapper takes as its `source` input, from a source face's embedding (see
/// [`IdentityKind`]). Computed once per source face, never per frame.
pub enum IdentityMap {
    /// inswapper: `normalise(e · emap)`.
    Emap(Emap),
    /// hyperswap: the unit embedding.
    Embedding,
    /// simswap: `normalise(converter(ArcFace output))`.
    Converted(Mutex<Model>),
}

/// An embedding converter: `input` 1×512 in, 1×512 out.
pub static CONVERTER_SPEC: ModelSpec = ModelSpec {
    role: "embedding converter",
    inputs: &[TensorSpec::named(
        "input",
        &[Dim::Fixed(1), Dim::Fixed(EMBEDDING_LEN as i64)],
    )],
    outputs: &[TensorSpec::positional(&[
        Dim::Fixed(1),
        Dim::Fixed(EMBEDDING_LEN as i64),
    ])],
};

impl IdentityMap {
    /// What `contract` needs: the emap of the swapper file at `swapper`, nothing, or the
    /// converter file it names in `models.dir` (loaded and checked here).
    pub fn load(
        rt: &Runtime,
        models: &ModelsConfig,
        contract: &Contract,
        swapper: &std::path::Path,
    ) -> Result<Self, SwapError> {
        Ok(match contract.identity {
            IdentityKind::Emap => Self::Emap(Emap::from_model_file(swapper)?),
            IdentityKind::Embedding => Self::Embedding,
            IdentityKind::Converted { converter } => {
                let path = models.dir.join(converter);
                Self::Converted(Mutex::new(Model::load(rt, models, &path, &CONVERTER_SPEC)?))
            }
        })
    }

    /// The swapper's `source` input for embedding `e`.
    pub fn source(&self, e: &Embedding) -> Result<Vec<f32>, SwapError> {
        let zero = || SwapError::Emap("the swapper's identity input of this face is zero".into());
        match self {
            Self::Emap(emap) => emap.latent(e).ok_or_else(zero),
            Self::Embedding => Ok(e.as_slice().to_vec()),
            Self::Converted(model) => {
                let mut model = model.lock().unwrap_or_else(|p| p.into_inner());
                let raw = e.raw();
                let input = TensorRef::from_array_view(([1usize, EMBEDDING_LEN], raw.as_slice()))
                    .map_err(|err| model.run_error(err))?;
                let output = model.output_names()[0].clone();
                let outputs = model
                    .session_mut()
                    .run(ort::inputs!["input" => input])
                    .map_err(|err| crate::infer::InferError::Run {
                        role: "embedding converter",
                        message: err.to_string(),
                    })?;
                let value = outputs.get(output.as_str()).ok_or_else(|| {
                    SwapError::ModelOutput("embedding converter returned no output".into())
                })?;
                let (_, data) = value
                    .try_extract_tensor::<f32>()
                    .map_err(|err| SwapError::ModelOutput(err.to_string()))?;
                if data.len() != EMBEDDING_LEN {
                    return Err(SwapError::ModelOutput(format!(
                        "embedding converter returned {} values, expected {EMBEDDING_LEN}",
                        data.len()
                    )));
                }
                normalised(data).ok_or_else(zero)
            }
        }
    }
}

/// ArcFace with its reusable input.
pub struct Recognizer {
    model: Model,
    input_name: String,
    output_name: String,
}

impl Recognizer {
    pub fn load(
        rt: &Runtime,
        config: &ModelsConfig,
        path: &std::path::Path,
    ) -> Result<Self, SwapError> {
        let model = Model::load(rt, config, path, &RECOGNIZER_SPEC)?;
        Ok(Self {
            input_name: model.input_names()[0].clone(),
            output_name: model.output_names()[0].clone(),
            model,
        })
    }

    /// Embeds one aligned crop: planar RGB, 3×112×112, normalised to (x − 127.5)/127.5.
    pub fn embed(&mut self, crop: &[f32]) -> Result<Embedding, SwapError> {
        let tensor = TensorRef::from_array_view(([1usize, 3, ARCFACE_SIZE, ARCFACE_SIZE], crop))
            .map_err(|e| self.model.run_error(e))?;
        let raw: Vec<f32> = {
            let outputs = self
                .model
                .session_mut()
                .run(ort::inputs![self.input_name.as_str() => tensor])
                .map_err(|e| crate::infer::InferError::Run {
                    role: "recognizer",
                    message: e.to_string(),
                })?;
            let value = outputs
                .get(self.output_name.as_str())
                .ok_or_else(|| SwapError::ModelOutput("recognizer returned no output".into()))?;
            let (_, data) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| SwapError::ModelOutput(e.to_string()))?;
            data.to_vec()
        };
        Embedding::from_raw(&raw).ok_or_else(|| {
            SwapError::ModelOutput("recognizer returned a zero or non-finite embedding".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latent_is_normalised_embedding_times_emap_normalised() {
        // 2-D by hand: e = (3, 4)/5 = (0.6, 0.8); emap = [[1, 2], [0, 1]].
        // e·emap = (0.6, 1.2 + 0.8) = (0.6, 2.0); norm = sqrt(0.36 + 4) = 2.088061;
        // latent = (0.287348, 0.957826).
        let e = Embedding(normalised(&[3.0, 4.0]).unwrap(), 5.0);
        assert!((e.0[0] - 0.6).abs() < 1e-7 && (e.0[1] - 0.8).abs() < 1e-7);
        let emap = Emap::new(2, vec![1.0, 2.0, 0.0, 1.0]).unwrap();
        let l = emap.latent(&e).unwrap();
        assert!((l[0] - 0.287_348).abs() < 1e-6, "{l:?}");
        assert!((l[1] - 0.957_826).abs() < 1e-6, "{l:?}");
        // The identity emap leaves a unit embedding as it is.
        let id = Emap::new(2, vec![1.0, 0.0, 0.0, 1.0]).unwrap();
        assert_eq!(id.latent(&e).unwrap(), e.0);
    }

    #[test]
    fn degenerate_inputs_are_refused() {
        assert!(Embedding::from_raw(&[0.0; EMBEDDING_LEN]).is_none());
        assert!(Embedding::from_raw(&[1.0; 3]).is_none());
        let mut nan = vec![1.0; EMBEDDING_LEN];
        nan[7] = f32::NAN;
        assert!(Embedding::from_raw(&nan).is_none());
        assert!(Emap::new(2, vec![1.0; 3]).is_none());
        // A singular emap can map an embedding to zero: no latent.
        let zero = Emap::new(2, vec![0.0; 4]).unwrap();
        let e = Embedding(normalised(&[1.0, 0.0]).unwrap(), 1.0);
        assert!(zero.latent(&e).is_none());
    }

    #[test]
    fn an_embedding_keeps_the_length_of_its_model_output() {
        let mut raw = vec![0.0; EMBEDDING_LEN];
        raw[0] = 3.0;
        raw[1] = 4.0;
        let e = Embedding::from_raw(&raw).unwrap();
        assert_eq!(&e.as_slice()[..2], &[0.6, 0.8]);
        let back = e.raw();
        assert!(
            (back[0] - 3.0).abs() < 1e-6 && (back[1] - 4.0).abs() < 1e-6,
            "{back:?}"
        );
    }

    #[test]
    fn similarity_is_cosine() {
        let a = Embedding(normalised(&[1.0, 0.0]).unwrap(), 1.0);
        let b = Embedding(normalised(&[1.0, 1.0]).unwrap(), 1.0);
        assert!((a.similarity(&b) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
    }
}
