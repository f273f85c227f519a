//! Host buffers bound to a model's inputs and output (ONNX Runtime's I/O binding), for the GPU
//! providers: page-locked (CUDA pinned) memory, which the GPU copies from and into by DMA, so a
//! batch is one copy to the device per input and one copy back, with no staging through
//! pageable memory and no allocation per run. The buffers of each batch size are allocated once
//! and kept.
//!
//! On the CPU provider the plain run already reads the caller's buffers in place; the live
//! stage binds only on the GPU providers. [`HostMemory::Cpu`] exists so that the same code runs
//! (and is tested) on a machine without a GPU.

use std::collections::HashMap;

use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::IoBinding;
use ort::value::Tensor;

use super::{InferError, Model};

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

pub struct BoundIo {
    allocator: Allocator,
    binding: IoBinding,
    /// By batch size: the inputs' buffers in input order, then the output's.
    buffers: HashMap<usize, Vec<Tensor<f32>>>,
}

impl BoundIo {
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

    /// Runs `model` on `inputs` (the first dimension of each shape is the batch), writing its
    /// output `output` of `output_shape` into `out`.
    pub fn run(
        &mut self,
        model: &mut Model,
        batch: usize,
        inputs: &[Input],
        output: &str,
        output_shape: &[usize],
        out: &mut [f32],
    ) -> Result<(), InferError> {
        let err = |e: ort::Error| InferError::Run {
            role: model.spec.role,
            message: e.to_string(),
        };
        if !self.buffers.contains_key(&batch) {
            let mut made = Vec::with_capacity(inputs.len() + 1);
            for i in inputs {
                made.push(Tensor::<f32>::new(&self.allocator, i.shape).map_err(err)?);
            }
            made.push(Tensor::<f32>::new(&self.allocator, output_shape).map_err(err)?);
            self.buffers.insert(batch, made);
        }
        let buffers = self.buffers.get_mut(&batch).expect("made above");
        let (outbuf, inbufs) = buffers.split_last_mut().expect("an output buffer");
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
        self.binding
            .bind_output(output, &mut *outbuf)
            .map_err(err)?;
        model.session.run_binding(&self.binding).map_err(err)?;
        self.binding.synchronize_outputs().map_err(err)?;
        let (_, data) = outbuf.extract_tensor();
        if data.len() != out.len() {
            return Err(model.run_error(format!(
                "output `{output}` of {} values, expected {}",
                data.len(),
                out.len()
            )));
        }
        out.copy_from_slice(data);
        Ok(())
    }
}
