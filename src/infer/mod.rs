//! ONNX Runtime environment, execution providers, model loading and validation.
//!
//! The ONNX Runtime shared library is opened at run time (`ort`'s `load-dynamic`) from
//! `models.onnxruntime_library`, which `scripts/install-onnxruntime.sh` fills from the PyPI wheels.
//! ONNX Runtime allows one environment per process, so [`runtime`] creates it once and hands out
//! a `'static` reference; sessions pick their execution provider one by one ([`Provider`]).
//!
//! Start-up is where failures must be loud: a missing library, a GPU
//! provider that does not register, or a model whose inputs and outputs are not the contract of
//! its role is an error with a message that says what to fix, never a panic or a silent fall-back
//! to the CPU.

pub mod bound;
pub mod manifest;
pub mod onnx_proto;
pub mod prepared;
pub mod scheduler;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::session::Session;
use ort::value::{TensorElementType, ValueType};
use serde::Deserialize;

/// Default location of the ONNX Runtime library (what the install script writes).
pub const DEFAULT_LIBRARY: &str = ".deps/onnxruntime/lib/libonnxruntime.so";
const INSTALL_HINT: &str = "run scripts/install-onnxruntime.sh (or scripts/install-onnxruntime.sh gpu), or point models.onnxruntime_library (FACERELAY_MODELS__ONNXRUNTIME_LIBRARY) at a libonnxruntime.so >= 1.31";

/// `[models]` section of the configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    /// Path of `libonnxruntime.so` (relative to the working directory). `ORT_DYLIB_PATH`, when
    /// set, takes precedence, as it does for every `ort` program.
    pub onnxruntime_library: PathBuf,
    /// Folder holding the model files.
    pub dir: PathBuf,
    /// File names inside `dir`.
    pub detector: String,
    pub recognizer: String,
    /// The deep swapper's file; empty: the one `swap.swapper` names (`<family>.onnx`).
    pub swapper: String,
    /// Folder of the packaged model set (`scripts/install-packaged-models.sh` fills it).
    pub packaged_dir: PathBuf,
    /// File names inside `packaged_dir`: BlazeFace, SCRFD, the face mesh and its topology.
    pub blazeface: String,
    pub scrfd: String,
    pub mesh: String,
    pub topology: String,
    /// Execution provider for every session.
    pub provider: Provider,
    /// GPU ordinal for `cuda` and `tensorrt`.
    pub device_id: i32,
    /// Threads ONNX Runtime uses inside one CPU operator; 0 = its default (one per core).
    pub intra_threads: usize,
    /// Let ONNX Runtime's CPU worker threads spin-wait between parallel sections.
    pub spin_wait: bool,
    /// Folder where the TensorRT provider keeps the engines it builds (empty: no cache; each
    /// start then builds them again, which takes minutes).
    pub tensorrt_cache: PathBuf,
    /// Run the verified variants `facerelay models prepare` wrote (`dir/prepared.json`) when
    /// they still match their originals: the dynamic-batch one, the fp16 one on GPU providers.
    pub prepared: bool,
}

/// Where ONNX Runtime runs the models.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Cpu,
    Cuda,
    /// TensorRT, with CUDA registered after it for the operators TensorRT does not take.
    Tensorrt,
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::Tensorrt => "tensorrt",
        })
    }
}

impl ModelsConfig {
    /// The library path actually used: `ORT_DYLIB_PATH` if set, else the config key.
    pub fn library_path(&self) -> PathBuf {
        match std::env::var_os("ORT_DYLIB_PATH") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => self.onnxruntime_library.clone(),
        }
    }

    pub fn detector_path(&self) -> PathBuf {
        self.dir.join(&self.detector)
    }

    pub fn recognizer_path(&self) -> PathBuf {
        self.dir.join(&self.recognizer)
    }

    pub fn blazeface_path(&self) -> PathBuf {
        self.packaged_dir.join(&self.blazeface)
    }

    pub fn scrfd_path(&self) -> PathBuf {
        self.packaged_dir.join(&self.scrfd)
    }

    pub fn mesh_path(&self) -> PathBuf {
        self.packaged_dir.join(&self.mesh)
    }

    pub fn topology_path(&self) -> PathBuf {
        self.packaged_dir.join(&self.topology)
    }

    /// The mesh swapper's files (BlazeFace, mesh, topology; SCRFD is optional).
    pub fn mesh_files(&self) -> [PathBuf; 3] {
        [
            self.blazeface_path(),
            self.mesh_path(),
            self.topology_path(),
        ]
    }

    /// Checks the section; called by `Config` validation.
    pub fn validate(&self) -> Result<(), String> {
        if self.onnxruntime_library.as_os_str().is_empty() {
            return Err("models.onnxruntime_library must name libonnxruntime.so".into());
        }
        for (key, name, dir) in [
            ("detector", &self.detector, "dir"),
            ("recognizer", &self.recognizer, "dir"),
            ("blazeface", &self.blazeface, "packaged_dir"),
            ("scrfd", &self.scrfd, "packaged_dir"),
            ("mesh", &self.mesh, "packaged_dir"),
            ("topology", &self.topology, "packaged_dir"),
        ] {
            if name.is_empty() || name.contains('/') {
                return Err(format!(
                    "models.{key} must be a file name inside models.{dir}"
                ));
            }
        }
        if self.swapper.contains('/') {
            return Err("models.swapper must be empty or a file name inside models.dir".into());
        }
        if self.device_id < 0 {
            return Err("models.device_id must be 0 or more".into());
        }
        Ok(())
    }

    /// The same settings pointed at the committed stand-in models (tests, demos, benches).
    pub fn with_fixtures(&self) -> Self {
        let mut c = self.clone();
        c.dir = PathBuf::from("models/fixtures");
        c.detector = "det_10g.onnx".into();
        c.recognizer = "w600k_r50.onnx".into();
        c.swapper = String::new();
        c
    }
}

/// What can go wrong in `infer`.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(
        "ONNX Runtime library not found at {path} (models.onnxruntime_library): {INSTALL_HINT}"
    )]
    LibraryMissing { path: PathBuf },
    #[error("cannot load ONNX Runtime from {path}: {message}; {INSTALL_HINT}")]
    LibraryLoad { path: PathBuf, message: String },
    #[error(
        "ONNX Runtime is already loaded from {loaded}; one process cannot switch to {requested}"
    )]
    LibraryMismatch { loaded: PathBuf, requested: PathBuf },
    #[error("ONNX Runtime environment: {0}")]
    Environment(String),
    #[error("{role} model not found at {path}: see models/README.md, `facerelay models check` and `facerelay models fetch`")]
    ModelMissing { role: &'static str, path: PathBuf },
    #[error("execution provider `{provider}` did not register for the {role} model ({path}): {message}. Refusing to fall back to the CPU; fix the GPU set-up (scripts/install-onnxruntime.sh gpu, driver, CUDA 13 libraries) or set models.provider = \"cpu\"")]
    Provider {
        provider: Provider,
        role: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("cannot load the {role} model {path}: {message} (corrupt or not an ONNX file?)")]
    ModelLoad {
        role: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{path} is not a usable {role} model: {message}")]
    WrongModel {
        role: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{role} model run failed: {message}")]
    Run { role: &'static str, message: String },
}

/// The process-wide ONNX Runtime environment.
pub struct Runtime {
    env: ort::environment::Environment,
    library: PathBuf,
    /// Outcome of loading the CUDA and cuDNN libraries beside ONNX Runtime, tried once.
    gpu_preload: std::sync::OnceLock<Result<(), String>>,
}

impl Runtime {
    /// `scripts/install-onnxruntime.sh gpu` puts the CUDA 13 and cuDNN 9 libraries from NVIDIA's
    /// wheels next to libonnxruntime.so. ONNX Runtime's CUDA provider finds them only through
    /// the dynamic loader, so load them first from there (the Python package does the same with
    /// `preload_dlls`). Without them in that folder, the system's loader path decides.
    fn preload_gpu_libraries(&self) -> Result<(), String> {
        self.gpu_preload
            .get_or_init(|| {
                let dir = match self.library.parent() {
                    Some(d) if d.join("libcudart.so.13").is_file() => d,
                    _ => return Ok(()),
                };
                ort::ep::cuda::preload_dylibs(Some(dir), Some(dir)).map_err(|e| e.to_string())
            })
            .clone()
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("library", &self.library)
            .finish_non_exhaustive()
    }
}

static RUNTIME: Mutex<Option<&'static Runtime>> = Mutex::new(None);

/// Loads the ONNX Runtime library named by `config` and creates the environment, once per
/// process; later calls return the same one (and refuse a different library path).
pub fn runtime(config: &ModelsConfig) -> Result<&'static Runtime, InferError> {
    let path = config.library_path();
    // ort panics on some paths when the library is absent; check first so the message names
    // the key and the script.
    if !path.is_file() {
        return Err(InferError::LibraryMissing { path });
    }
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(rt) = *slot {
        if same_file(&rt.library, &path) {
            return Ok(rt);
        }
        return Err(InferError::LibraryMismatch {
            loaded: rt.library.clone(),
            requested: path,
        });
    }
    let load = |path: &Path| -> Result<ort::environment::Environment, InferError> {
        let builder = ort::init_from(path).map_err(|e| InferError::LibraryLoad {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        builder
            .with_name("facerelay")
            .with_telemetry(false)
            .build()
            .map_err(|e| InferError::Environment(e.to_string()))
    };
    let env =
        std::panic::catch_unwind(|| load(&path)).map_err(|panic| InferError::LibraryLoad {
            path: path.clone(),
            message: panic_message(&panic),
        })??;
    let rt: &'static Runtime = Box::leak(Box::new(Runtime {
        env,
        library: path,
        gpu_preload: std::sync::OnceLock::new(),
    }));
    *slot = Some(rt);
    Ok(rt)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "ONNX Runtime panicked while loading".to_owned()
    }
}

/// One dimension of a declared tensor shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    /// Any size, symbolic or fixed (ONNX Runtime reports symbolic ones as -1).
    Any,
    /// Exactly this size. A symbolic dimension is accepted too when `Fixed` is the size the
    /// code feeds (the batch dimension of ArcFace is symbolic in the real file).
    Fixed(i64),
}

/// The contract of one input or output.
#[derive(Debug, Clone, Copy)]
pub struct TensorSpec {
    /// Required name; `None` where exporters number tensors arbitrarily and the code goes by
    /// position (SCRFD outputs, ArcFace).
    pub name: Option<&'static str>,
    pub dims: &'static [Dim],
    /// Also accept the same tensor with a leading batch dimension of 1 (some exports of SCRFD
    /// add one to every output; insightface handles both).
    pub optional_batch: bool,
}

impl TensorSpec {
    /// A tensor that must carry this name.
    pub const fn named(name: &'static str, dims: &'static [Dim]) -> Self {
        Self {
            name: Some(name),
            dims,
            optional_batch: false,
        }
    }

    /// A tensor read by position, whatever its name.
    pub const fn positional(dims: &'static [Dim]) -> Self {
        Self {
            name: None,
            dims,
            optional_batch: false,
        }
    }

    /// The same, also accepted with a leading batch dimension of 1.
    pub const fn or_batched(self) -> Self {
        Self {
            optional_batch: true,
            ..self
        }
    }
}

/// The contract of one model role: its inputs and outputs in order.
#[derive(Debug, Clone, Copy)]
pub struct ModelSpec {
    pub role: &'static str,
    pub inputs: &'static [TensorSpec],
    pub outputs: &'static [TensorSpec],
}

/// A loaded, validated model. `run` needs `&mut`, so each one has a single owner.
pub struct Model {
    session: Session,
    spec: &'static ModelSpec,
    path: PathBuf,
    input_names: Vec<String>,
    output_names: Vec<String>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("role", &self.spec.role)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Loads `path` on the configured provider and checks it against `spec`.
    pub fn load(
        rt: &Runtime,
        config: &ModelsConfig,
        path: &Path,
        spec: &'static ModelSpec,
    ) -> Result<Self, InferError> {
        let role = spec.role;
        if !path.is_file() {
            return Err(InferError::ModelMissing {
                role,
                path: path.to_owned(),
            });
        }
        let load_err = |message: String| InferError::ModelLoad {
            role,
            path: path.to_owned(),
            message,
        };
        let mut builder = Session::builder(&rt.env).map_err(|e| load_err(e.to_string()))?;
        if config.intra_threads > 0 {
            builder = builder
                .with_intra_threads(config.intra_threads)
                .map_err(|e| load_err(e.to_string()))?;
        }
        // Spinning workers keep a core busy after every run, which is taken straight from the
        // codec and image work sharing the machine.
        builder = builder
            .with_config_entry(
                "session.intra_op.allow_spinning",
                if config.spin_wait { "1" } else { "0" },
            )
            .map_err(|e| load_err(e.to_string()))?;
        let provider_err = |message: String| InferError::Provider {
            provider: config.provider,
            role,
            path: path.to_owned(),
            message: message.trim_end_matches('.').to_owned(),
        };
        let eps = execution_providers(config);
        if !eps.is_empty() {
            rt.preload_gpu_libraries().map_err(provider_err)?;
            builder = builder
                .with_execution_providers(eps)
                .map_err(|e| provider_err(e.to_string()))?;
        }
        let session = builder
            .commit_from_file(path)
            .map_err(|e| load_err(e.to_string()))?;
        let model = Self {
            input_names: session
                .inputs()
                .iter()
                .map(|o| o.name().to_owned())
                .collect(),
            output_names: session
                .outputs()
                .iter()
                .map(|o| o.name().to_owned())
                .collect(),
            session,
            spec,
            path: path.to_owned(),
        };
        model.validate()?;
        Ok(model)
    }

    fn validate(&self) -> Result<(), InferError> {
        let wrong = |message: String| InferError::WrongModel {
            role: self.spec.role,
            path: self.path.clone(),
            message,
        };
        check_outlets("input", self.session.inputs(), self.spec.inputs).map_err(wrong)?;
        check_outlets("output", self.session.outputs(), self.spec.outputs).map_err(wrong)
    }

    /// Whether every input and output has a symbolic first (batch) dimension: the model then
    /// takes several requests in one run.
    pub fn dynamic_batch(&self) -> bool {
        let symbolic = |o: &ort::value::Outlet| matches!(o.dtype(), ValueType::Tensor { shape, .. } if shape.first() == Some(&-1));
        let s = &self.session;
        s.inputs().iter().chain(s.outputs()).all(symbolic)
    }

    pub fn role(&self) -> &'static str {
        self.spec.role
    }

    /// Names of the inputs, in the model's order.
    pub fn input_names(&self) -> &[String] {
        &self.input_names
    }

    /// Rank of each output, in the model's order.
    pub fn output_ranks(&self) -> Vec<usize> {
        let rank = |o: &ort::value::Outlet| match o.dtype() {
            ValueType::Tensor { shape, .. } => shape.len(),
            _ => 0,
        };
        self.session.outputs().iter().map(rank).collect()
    }

    /// Names of the outputs, in the model's order.
    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }

    /// The session, for running it (validation has pinned its inputs and outputs).
    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// Maps an `ort` error during `run` to this module's error.
    pub fn run_error(&self, e: impl std::fmt::Display) -> InferError {
        InferError::Run {
            role: self.spec.role,
            message: e.to_string(),
        }
    }
}

/// The providers to register for a session. Each registers with `error_on_failure`, so a GPU
/// that is absent (or an ONNX Runtime built without CUDA) fails session creation. TensorRT keeps
/// the engines it builds in `models.tensorrt_cache`, so they are built once per model and GPU.
fn execution_providers(config: &ModelsConfig) -> Vec<ort::ep::ExecutionProviderDispatch> {
    let (provider, device_id) = (config.provider, config.device_id);
    let cuda = || {
        ort::ep::CUDA::default()
            .with_device_id(device_id)
            .build()
            .error_on_failure()
    };
    match provider {
        Provider::Cpu => Vec::new(),
        Provider::Cuda => vec![cuda()],
        Provider::Tensorrt => vec![tensorrt(config).build().error_on_failure(), cuda()],
    }
}

/// The TensorRT provider's options: the device, and the engine and timing caches in
/// `models.tensorrt_cache` (created when missing) unless it is empty.
fn tensorrt(config: &ModelsConfig) -> ort::ep::TensorRT {
    let trt = ort::ep::TensorRT::default().with_device_id(config.device_id);
    let cache = &config.tensorrt_cache;
    if cache.as_os_str().is_empty() {
        return trt;
    }
    if let Err(e) = std::fs::create_dir_all(cache) {
        tracing::warn!(dir = %cache.display(), error = %e, "cannot create the TensorRT engine cache: engines are built at every start");
        return trt;
    }
    let dir = cache.display().to_string();
    trt.with_engine_cache(true)
        .with_engine_cache_path(&dir)
        .with_timing_cache(true)
        .with_timing_cache_path(&dir)
}

fn check_outlets(
    kind: &str,
    actual: &[ort::value::Outlet],
    expected: &[TensorSpec],
) -> Result<(), String> {
    if actual.len() != expected.len() {
        return Err(format!(
            "expected {} {kind}s, the file has {} ({})",
            expected.len(),
            actual.len(),
            actual
                .iter()
                .map(|o| o.name())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // Tensors the code takes by name may come in any order (exporters differ); the others are
    // taken by position.
    let by_name = expected.iter().all(|s| s.name.is_some());
    for (i, spec) in expected.iter().enumerate() {
        let outlet = match spec.name {
            Some(want) if by_name => actual.iter().find(|o| o.name() == want).ok_or_else(|| {
                let names: Vec<&str> = actual.iter().map(|o| o.name()).collect();
                format!(
                    "no {kind} named `{want}` (the file has {})",
                    names.join(", ")
                )
            })?,
            _ => &actual[i],
        };
        let name = outlet.name();
        if let Some(want) = spec.name {
            if name != want {
                return Err(format!("{kind} {i} is named `{name}`, expected `{want}`"));
            }
        }
        let ValueType::Tensor { ty, shape, .. } = outlet.dtype() else {
            return Err(format!("{kind} `{name}` is not a tensor"));
        };
        if *ty != TensorElementType::Float32 {
            return Err(format!(
                "{kind} `{name}` has element type {ty:?}, expected float32"
            ));
        }
        let mut dims: &[i64] = shape;
        if spec.optional_batch && dims.len() == spec.dims.len() + 1 && matches!(dims[0], 1 | -1) {
            dims = &dims[1..];
        }
        if dims.len() != spec.dims.len() {
            return Err(format!(
                "{kind} `{name}` has rank {} ({dims:?}), expected rank {} ({})",
                dims.len(),
                spec.dims.len(),
                describe(spec.dims)
            ));
        }
        for (d, (&got, want)) in dims.iter().zip(spec.dims).enumerate() {
            if let Dim::Fixed(want) = *want {
                // -1: symbolic; the code feeds `want` there, which the model accepts.
                if got != want && got != -1 {
                    return Err(format!(
                        "{kind} `{name}` has shape {dims:?}, expected {} (dimension {d})",
                        describe(spec.dims)
                    ));
                }
            }
        }
    }
    Ok(())
}

fn describe(dims: &[Dim]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| match d {
            Dim::Any => "?".to_owned(),
            Dim::Fixed(n) => n.to_string(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ModelsConfig {
        crate::config::Config::defaults().models
    }

    #[test]
    fn missing_library_is_a_clear_error_naming_key_and_script() {
        let mut c = config();
        c.onnxruntime_library = PathBuf::from("/nonexistent/libonnxruntime.so");
        // ORT_DYLIB_PATH would win; tests never set it.
        if std::env::var_os("ORT_DYLIB_PATH").is_some() {
            return;
        }
        let e = runtime(&c).unwrap_err().to_string();
        assert!(e.contains("models.onnxruntime_library"), "{e}");
        assert!(e.contains("scripts/install-onnxruntime.sh"), "{e}");
    }

    fn outlet(name: &str, dims: &[i64], ty: TensorElementType) -> ort::value::Outlet {
        ort::value::Outlet::new(
            name,
            ValueType::Tensor {
                ty,
                shape: ort::value::Shape::new(dims.iter().copied()),
                dimension_symbols: ort::value::SymbolicDimensions::empty(dims.len()),
            },
        )
    }

    #[test]
    fn outlets_are_checked_by_name_type_rank_and_fixed_dims() {
        use TensorElementType::Float32;
        // ort calls into the library even to build an Outlet (and panics without one).
        runtime(&config()).expect("ONNX Runtime missing: run scripts/install-onnxruntime.sh");
        static SPEC: [TensorSpec; 1] = [TensorSpec::named(
            "source",
            &[Dim::Fixed(1), Dim::Fixed(512)],
        )];
        let ok = |o: ort::value::Outlet| check_outlets("input", &[o], &SPEC);
        assert_eq!(ok(outlet("source", &[1, 512], Float32)), Ok(()));
        // A symbolic batch dimension (-1) is fine: we feed 1.
        assert_eq!(ok(outlet("source", &[-1, 512], Float32)), Ok(()));
        let e = ok(outlet("latent", &[1, 512], Float32)).unwrap_err();
        assert!(
            e.contains("no input named `source` (the file has latent)"),
            "{e}"
        );
        // Named tensors in another order than the contract's are found by name.
        static PAIR: [TensorSpec; 2] = [
            TensorSpec::named("target", &[Dim::Fixed(1), Dim::Fixed(3)]),
            TensorSpec::named("source", &[Dim::Fixed(1), Dim::Fixed(512)]),
        ];
        let pair = [
            outlet("source", &[1, 512], Float32),
            outlet("target", &[1, 3], Float32),
        ];
        assert_eq!(check_outlets("input", &pair, &PAIR), Ok(()));
        let swapped = [
            outlet("source", &[1, 3], Float32),
            outlet("target", &[1, 512], Float32),
        ];
        assert!(check_outlets("input", &swapped, &PAIR).is_err());
        let e = ok(outlet("source", &[1, 256], Float32)).unwrap_err();
        assert!(e.contains("[1, 256]") && e.contains("[1, 512]"), "{e}");
        let e = ok(outlet("source", &[512], Float32)).unwrap_err();
        assert!(e.contains("rank 1"), "{e}");
        let e = ok(outlet("source", &[1, 512], TensorElementType::Float16)).unwrap_err();
        assert!(e.contains("expected float32"), "{e}");

        // SCRFD outputs: [N, 4], or [1, N, 4] from batched exports.
        static BOXES: [TensorSpec; 1] =
            [TensorSpec::positional(&[Dim::Any, Dim::Fixed(4)]).or_batched()];
        let check = |dims: &[i64]| check_outlets("output", &[outlet("451", dims, Float32)], &BOXES);
        assert_eq!(check(&[12800, 4]), Ok(()));
        assert_eq!(check(&[1, 12800, 4]), Ok(()));
        assert!(check(&[2, 12800, 4]).is_err());
        assert!(check(&[12800, 5]).is_err());
    }

    #[test]
    fn shape_checks_explain_the_mismatch() {
        let spec = [TensorSpec::named(
            "target",
            &[
                Dim::Fixed(1),
                Dim::Fixed(3),
                Dim::Fixed(128),
                Dim::Fixed(128),
            ],
        )];
        assert_eq!(describe(spec[0].dims), "[1, 3, 128, 128]");
        let e = check_outlets("input", &[], &spec).unwrap_err();
        assert!(e.contains("expected 1 inputs"), "{e}");
    }
}
