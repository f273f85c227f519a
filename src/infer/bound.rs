//! Host buffers bound to a model's inputs and outputs (ONNX Runtime's I/O binding), for the GPU
//! providers: page-locked (CUDA pinned) memory, which the GPU copies from and into by DMA, so a
//! batch is one copy to the device per input and one copy back per output, with no staging
//! through pageable memory and no allocation per run. The buffers of each batch size are
//! allocated once and kept.
//!
//! On the CPU provider the plain run already reads the caller's buffers in place; the live
//! stage binds only on the GPU providers. [`HostMemory::Cpu`] exists so that the same code runs
//! (and is tested) on a machine without a GPU.

use std::collections::HashMap;

use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::IoBinding;
use ort::value::Tensor;

use super::{InferError, Model, ModelsConfig, Provider};

/// Where the bound buffers live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMemory {
    /// Page-locked host memory of the CUDA provider (cuda and tensorrt), for this GPU ordinal.
    CudaPinned(i32),
    /// ONNX Runtime's ordinary CPU allocator.
    Cpu,
}

/// One input to copy in: its name, shape and values.
pub struct Input<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
    pub data: &'a [f32],
}

/// One model's binding and its buffers.
pub struct BoundIo {
    allocator: Allocator,
    binding: IoBinding,
    /// By batch size: the inputs' buffers in input order, then the outputs'.
    buffers: HashMap<usize, Vec<Tensor<f32>>>,
}

impl BoundIo {
    /// The buffers `model` runs through under `models.provider`: pinned ones on the GPU
    /// providers, none on the CPU (whose plain run reads the caller's buffers in place).
    pub fn for_provider(model: &Model, models: &ModelsConfig) -> Result<Option<Self>, InferError> {
        match models.provider {
            Provider::Cpu => Ok(None),
            _ => Self::new(model, HostMemory::CudaPinned(models.device_id)).map(Some),
        }
    }

    pub fn new(model: &Model, memory: HostMemory) -> Result<Self, InferError> {
        let session = &model.session;
        let allocator = match memory {
            HostMemory::Cpu => Allocator::default(),
            HostMemory::CudaPinned(device) => MemoryInfo::new(
                AllocationDevice::CUDA_PINNED,
                device,
                AllocatorType::Device,
                MemoryType::CPUInput,
            )
            .and_then(|info| Allocator::new(session, info))
            .map_err(|e| model.run_error(format!("no pinned host memory: {e}")))?,
        };
        let binding = session.create_binding().map_err(|e| model.run_error(e))?;
        Ok(Self {
            allocator,
            binding,
            buffers: HashMap::new(),
        })
    }

    /// Runs `model` on `inputs` (copied into the bound buffers of this `batch` size) and
    /// returns its `outputs` (name and shape), read from their bound buffers.
    pub fn run(
        &mut self,
        model: &mut Model,
        batch: usize,
        inputs: &[Input],
        outputs: &[(&str, &[usize])],
    ) -> Result<Vec<&[f32]>, InferError> {
        let err = |e: ort::Error| InferError::Run {
            role: model.spec.role,
            message: e.to_string(),
        };
        if !self.buffers.contains_key(&batch) {
            let mut made = Vec::with_capacity(inputs.len() + outputs.len());
            for shape in inputs
                .iter()
                .map(|i| i.shape)
                .chain(outputs.iter().map(|o| o.1))
            {
                made.push(Tensor::<f32>::new(&self.allocator, shape).map_err(err)?);
            }
            self.buffers.insert(batch, made);
        }
        let buffers = self.buffers.get_mut(&batch).expect("made above");
        let (inbufs, outbufs) = buffers.split_at_mut(inputs.len());
        self.binding.clear();
        for (i, buffer) in inputs.iter().zip(inbufs.iter_mut()) {
            let (_, data) = buffer.extract_tensor_mut();
            if data.len() != i.data.len() {
                return Err(model.run_error(format!(
                    "input `{}` of {} values, its buffer holds {}",
                    i.name,
                    i.data.len(),
                    data.len()
                )));
            }
            data.copy_from_slice(i.data);
            // Binding copies to the device now, where the model runs elsewhere.
            self.binding.bind_input(i.name, buffer).map_err(err)?;
        }
        for ((name, _), buffer) in outputs.iter().zip(outbufs.iter_mut()) {
            self.binding.bind_output(*name, &mut *buffer).map_err(err)?;
        }
        model.session.run_binding(&self.binding).map_err(err)?;
        self.binding.synchronize_outputs().map_err(err)?;
        Ok(outbufs.iter().map(|b| b.extract_tensor().1).collect())
    }
}
