//! Face detection with SCRFD (`det_10g.onnx`): letterbox straight from I420 into the input
//! tensor, anchor decoding for strides 8/16/32 with two anchors per cell, score threshold and
//! non-maximum suppression, and the way back to frame coordinates.

use std::time::Instant;

use ort::value::TensorRef;

use super::color::Planes;
use super::geometry::{Letterbox, Point};
use super::{StageTimings, SwapError};
use crate::infer::bound::{BoundIo, HostMemory, Input};
use crate::infer::{Dim, InferError, Model, ModelSpec, ModelsConfig, Runtime, TensorSpec};

/// SCRFD's feature strides, in output order.
pub const STRIDES: [u32; 3] = [8, 16, 32];
/// Anchors per feature-map cell.
pub const ANCHORS: usize = 2;

const fn out(width: i64) -> TensorSpec {
    TensorSpec::positional(match width {
        1 => &[Dim::Any, Dim::Fixed(1)],
        4 => &[Dim::Any, Dim::Fixed(4)],
        _ => &[Dim::Any, Dim::Fixed(10)],
    })
    .or_batched()
}

/// The detector's contract: one NCHW RGB input of any size, nine outputs (scores, boxes,
/// keypoints for each stride), read by position as insightface does; exporters number them.
pub static DETECTOR_SPEC: ModelSpec = ModelSpec {
    role: "detector",
    inputs: &[TensorSpec::positional(&[
        Dim::Fixed(1),
        Dim::Fixed(3),
        Dim::Any,
        Dim::Any,
    ])],
    outputs: &[
        out(1),
        out(1),
        out(1),
        out(4),
        out(4),
        out(4),
        out(10),
        out(10),
        out(10),
    ],
};

/// One detected face, in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Detection {
    pub score: f32,
    /// x1, y1, x2, y2.
    pub bbox: [f32; 4],
    /// Left eye, right eye, nose, left and right mouth corner.
    pub kps: [Point; 5],
}

impl Detection {
    pub fn area(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]).max(0.0) * (self.bbox[3] - self.bbox[1]).max(0.0)
    }

    fn is_finite(&self) -> bool {
        self.score.is_finite()
            && self.bbox.iter().all(|v| v.is_finite())
            && self.kps.iter().flatten().all(|v| v.is_finite())
    }
}

/// The three raw tensors of one stride.
#[derive(Debug, Clone, Copy)]
pub struct StrideOutput<'a> {
    pub stride: u32,
    pub scores: &'a [f32],
    pub boxes: &'a [f32],
    pub kps: &'a [f32],
}

/// Decodes anchors scoring at least `threshold`. Anchor `i` of a stride sits at cell
/// `i / 2` (row-major), centre `(col·s, row·s)`; boxes are distances to the four sides and
/// keypoints offsets from the centre, all in units of the stride. Result in input pixels.
pub fn decode(
    outputs: &[StrideOutput],
    input_size: u32,
    threshold: f32,
) -> Result<Vec<Detection>, SwapError> {
    let mut found = Vec::new();
    for o in outputs {
        let s = o.stride as usize;
        let cells_x = input_size as usize / s;
        let n = cells_x * (input_size as usize / s) * ANCHORS;
        if o.scores.len() != n || o.boxes.len() != 4 * n || o.kps.len() != 10 * n {
            return Err(SwapError::DetectorOutput(format!(
                "stride {s}: expected {n} anchors ({n}/{}/{} values), got {}/{}/{}",
                4 * n,
                10 * n,
                o.scores.len(),
                o.boxes.len(),
                o.kps.len()
            )));
        }
        let sf = s as f32;
        for (i, &score) in o.scores.iter().enumerate() {
            if score.is_nan() || score < threshold {
                continue;
            }
            let cell = i / ANCHORS;
            let (cx, cy) = ((cell % cells_x) as f32 * sf, (cell / cells_x) as f32 * sf);
            let b = &o.boxes[4 * i..4 * i + 4];
            let k = &o.kps[10 * i..10 * i + 10];
            let det = Detection {
                score,
                bbox: [
                    cx - b[0] * sf,
                    cy - b[1] * sf,
                    cx + b[2] * sf,
                    cy + b[3] * sf,
                ],
                kps: std::array::from_fn(|j| [cx + k[2 * j] * sf, cy + k[2 * j + 1] * sf]),
            };
            if det.is_finite() {
                found.push(det);
            }
        }
    }
    Ok(found)
}

/// Intersection over union of two boxes (continuous coordinates).
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Greedy non-maximum suppression: best score first, dropping boxes that overlap a kept one by
/// more than `threshold`.
pub fn nms(mut dets: Vec<Detection>, threshold: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::with_capacity(dets.len().min(16));
    for d in dets {
        if kept.iter().all(|k| iou(&k.bbox, &d.bbox) <= threshold) {
            kept.push(d);
        }
    }
    kept
}

/// Maps a detection from letterbox to frame coordinates.
pub fn to_frame(d: &Detection, lb: &Letterbox) -> Detection {
    let [x1, y1] = lb.to_frame([d.bbox[0], d.bbox[1]]);
    let [x2, y2] = lb.to_frame([d.bbox[2], d.bbox[3]]);
    Detection {
        score: d.score,
        bbox: [x1, y1, x2, y2],
        kps: d.kps.map(|p| lb.to_frame(p)),
    }
}

/// Lookup tables for BT.601 limited range → normalised detector input, per channel:
/// value = clamp(rgb, 0, 255)·(1/128) − 127.5/128.
struct Luts {
    y: [f32; 256],
    rv: [f32; 256],
    gu: [f32; 256],
    gv: [f32; 256],
    bu: [f32; 256],
}

impl Luts {
    fn new() -> Self {
        let t = |f: fn(f32) -> f32| std::array::from_fn(|i| f(i as f32));
        Self {
            y: t(|v| 1.164_383 * (v - 16.0)),
            rv: t(|v| 1.596_027 * (v - 128.0)),
            gu: t(|v| -0.391_762 * (v - 128.0)),
            gv: t(|v| -0.812_968 * (v - 128.0)),
            bu: t(|v| 2.017_232 * (v - 128.0)),
        }
    }
}

const PAD_VALUE: f32 = -127.5 / 128.0;

#[inline]
fn norm(c: f32) -> f32 {
    c.clamp(0.0, 255.0) * (1.0 / 128.0) - 127.5 / 128.0
}

/// Writes the letterboxed, normalised RGB of the frame into the top-left of a planar
/// `3 × size × size` tensor. Only the scaled frame region is written; the caller fills the
/// padding once. Luma is resized bilinearly; chroma is taken from the nearest sample, which is
/// all a detector needs.
pub fn fill_letterbox(planes: Planes, lb: &Letterbox, out: &mut [f32]) {
    let luts = LUTS.get_or_init(Luts::new);
    let size = lb.size as usize;
    let plane = size * size;
    let (sw, sh) = (lb.scaled_w as usize, lb.scaled_h as usize);
    let (w, h, cw) = (planes.width, planes.height, planes.width / 2);
    let (r_out, rest) = out.split_at_mut(plane);
    let (g_out, b_out) = rest.split_at_mut(plane);
    if sw == w && sh == h {
        // Same size: one pass over the frame, no interpolation.
        for y in 0..h {
            let yrow = &planes.y[y * w..y * w + w];
            let urow = &planes.u[(y / 2) * cw..(y / 2) * cw + cw];
            let vrow = &planes.v[(y / 2) * cw..(y / 2) * cw + cw];
            let o = y * size;
            for x in 0..w {
                let l = luts.y[yrow[x] as usize];
                let (u, v) = (urow[x / 2] as usize, vrow[x / 2] as usize);
                r_out[o + x] = norm(l + luts.rv[v]);
                g_out[o + x] = norm(l + luts.gu[u] + luts.gv[v]);
                b_out[o + x] = norm(l + luts.bu[u]);
            }
        }
        return;
    }
    let map = |scaled: usize, src: usize| -> Vec<(usize, usize, f32, usize)> {
        let ratio = src as f32 / scaled as f32;
        (0..scaled)
            .map(|i| {
                let s = ((i as f32 + 0.5) * ratio - 0.5)
                    .max(0.0)
                    .min((src - 1) as f32);
                let i0 = s as usize;
                (
                    i0,
                    (i0 + 1).min(src - 1),
                    s - i0 as f32,
                    (s.round() as usize / 2).min(src / 2 - 1),
                )
            })
            .collect()
    };
    let cols = map(sw, w);
    let rows = map(sh, h);
    for (oy, &(y0, y1, fy, cy)) in rows.iter().enumerate() {
        let r0 = &planes.y[y0 * w..y0 * w + w];
        let r1 = &planes.y[y1 * w..y1 * w + w];
        let urow = &planes.u[cy * cw..cy * cw + cw];
        let vrow = &planes.v[cy * cw..cy * cw + cw];
        let o = oy * size;
        for (ox, &(x0, x1, fx, cx)) in cols.iter().enumerate() {
            let top = f32::from(r0[x0]) + (f32::from(r0[x1]) - f32::from(r0[x0])) * fx;
            let bottom = f32::from(r1[x0]) + (f32::from(r1[x1]) - f32::from(r1[x0])) * fx;
            let l = 1.164_383 * (top + (bottom - top) * fy - 16.0);
            let (u, v) = (urow[cx] as usize, vrow[cx] as usize);
            r_out[o + ox] = norm(l + luts.rv[v]);
            g_out[o + ox] = norm(l + luts.gu[u] + luts.gv[v]);
            b_out[o + ox] = norm(l + luts.bu[u]);
        }
    }
}

static LUTS: std::sync::OnceLock<Luts> = std::sync::OnceLock::new();

/// Thresholds of one detection pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectParams {
    pub score_threshold: f32,
    pub nms_threshold: f32,
}

/// One frame letterboxed into the detector's input (3×size×size), as the detector feeds it.
pub fn letterboxed(planes: Planes, size: u32) -> Vec<f32> {
    let lb = Letterbox::new(planes.width as u32, planes.height as u32, size);
    let mut input = vec![PAD_VALUE; 3 * size as usize * size as usize];
    fill_letterbox(planes, &lb, &mut input);
    input
}

/// The SCRFD detector with its reusable input buffer.
pub struct Detector {
    model: Model,
    input_name: String,
    output_names: Vec<String>,
    size: u32,
    /// One letterboxed frame after the other (3×size×size each).
    input: Vec<f32>,
    /// The letterbox each frame's padding in `input` was laid out for.
    padded_for: Vec<Option<Letterbox>>,
    /// Rank of each output (2: [anchors, C]; 3: with a batch dimension first).
    output_ranks: Vec<usize>,
    /// Bound host buffers (GPU providers), else a plain run.
    bound: Option<BoundIo>,
}

impl Detector {
    /// Loads and validates the detector; `size` is the square input side (multiple of 32).
    pub fn load(
        rt: &Runtime,
        config: &ModelsConfig,
        path: &std::path::Path,
        size: u32,
    ) -> Result<Self, SwapError> {
        let model = Model::load(rt, config, path, &DETECTOR_SPEC)?;
        Ok(Self {
            input_name: model.input_names()[0].clone(),
            output_names: model.output_names().to_vec(),
            output_ranks: model.output_ranks(),
            bound: BoundIo::for_provider(&model, config)?,
            model,
            size,
            input: Vec::new(),
            padded_for: Vec::new(),
        })
    }

    /// Runs through buffers of `memory` bound to the model's input and outputs
    /// ([`crate::infer::bound`]); `load` does this with pinned memory on the GPU providers.
    pub fn bind_host_memory(&mut self, memory: HostMemory) -> Result<(), SwapError> {
        self.bound = Some(BoundIo::new(&self.model, memory)?);
        Ok(())
    }

    /// Whether runs go through bound host buffers (not since they failed, if they did).
    pub fn is_bound(&self) -> bool {
        self.bound.is_some()
    }

    /// The name of the model's input.
    pub fn input_name(&self) -> &str {
        &self.input_name
    }

    /// Whether the file takes several frames in one run (a variant `facerelay models prepare`
    /// wrote; the public file is fixed at 1).
    pub fn dynamic_batch(&self) -> bool {
        self.model.dynamic_batch()
    }

    /// Detects faces in a frame: boxes and keypoints in frame pixels, best score first.
    pub fn detect(
        &mut self,
        planes: Planes,
        params: &DetectParams,
        timings: &mut StageTimings,
    ) -> Result<Vec<Detection>, SwapError> {
        let mut found = self.detect_many(&[planes], params, timings)?;
        Ok(found.pop().unwrap_or_default())
    }

    /// Detects faces in several frames: one model run when the file takes a batch, else one
    /// run per frame. Each frame's faces as [`Detector::detect`] gives them.
    pub fn detect_many(
        &mut self,
        frames: &[Planes],
        params: &DetectParams,
        timings: &mut StageTimings,
    ) -> Result<Vec<Vec<Detection>>, SwapError> {
        let n = frames.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        if n > 1 && !self.dynamic_batch() {
            return frames
                .iter()
                .map(|p| self.detect(*p, params, timings))
                .collect();
        }
        let t0 = Instant::now();
        let s = self.size as usize;
        let item = 3 * s * s;
        self.input.resize(n * item, PAD_VALUE);
        self.padded_for.resize(n, None);
        let mut boxes = Vec::with_capacity(n);
        for (k, planes) in frames.iter().enumerate() {
            let lb = Letterbox::new(planes.width as u32, planes.height as u32, self.size);
            let input = &mut self.input[k * item..(k + 1) * item];
            if self.padded_for[k] != Some(lb) {
                input.fill(PAD_VALUE);
                self.padded_for[k] = Some(lb);
            }
            fill_letterbox(*planes, &lb, input);
            boxes.push(lb);
        }
        let t1 = Instant::now();
        timings.letterbox += t1 - t0;

        let size = self.size;
        if let Some(bound) = &mut self.bound {
            let input = [n, 3, s, s];
            // Each output: [n, anchors, C] for a batch variant (and SCRFD exports with a batch
            // of 1), [anchors, C] for the public file (n = 1 there).
            let shapes: Vec<Vec<usize>> = (0..9)
                .map(|j| {
                    let cells = (s / STRIDES[j % 3] as usize).pow(2) * ANCHORS;
                    let width = [1, 4, 10][j / 3];
                    match self.output_ranks[j] {
                        3 => vec![n, cells, width],
                        _ => vec![cells * n, width],
                    }
                })
                .collect();
            let outputs: Vec<(&str, &[usize])> = self
                .output_names
                .iter()
                .zip(&shapes)
                .map(|(name, shape)| (name.as_str(), shape.as_slice()))
                .collect();
            let inputs = [Input {
                name: &self.input_name,
                shape: &input,
                data: &self.input[..n * item],
            }];
            match bound.run(&mut self.model, n, &inputs, &outputs) {
                Ok(raw) => {
                    timings.detect_run += t1.elapsed();
                    let t2 = Instant::now();
                    let result = faces_of(&raw, &boxes, size, params);
                    timings.detect_post += t2.elapsed();
                    return result;
                }
                // Bound buffers have run on no GPU yet: one that refuses them is not a reason
                // to fail every frame. Plain runs from here on, said once.
                Err(e) => {
                    tracing::warn!(error = %e, "the detector's bound host buffers failed: plain runs from now on");
                    self.bound = None;
                }
            }
        }
        let tensor = TensorRef::from_array_view(([n, 3, s, s], &self.input[..n * item]))
            .map_err(|e| self.model.run_error(e))?;
        let session = self.model.session_mut();
        let outputs = session
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(|e| InferError::Run {
                role: "detector",
                message: e.to_string(),
            })?;
        let t2 = Instant::now();
        timings.detect_run += t2 - t1;

        let mut raw: Vec<&[f32]> = Vec::with_capacity(9);
        for name in &self.output_names {
            let value = outputs.get(name.as_str()).ok_or_else(|| {
                SwapError::DetectorOutput(format!("output `{name}` missing from the run"))
            })?;
            let (_, data) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| SwapError::DetectorOutput(e.to_string()))?;
            raw.push(data);
        }
        let result = faces_of(&raw, &boxes, size, params);
        // Hand ONNX Runtime its output buffers back inside the measured span.
        drop(raw);
        drop(outputs);
        timings.detect_post += t2.elapsed();
        result
    }
}

/// Each frame's faces from the nine outputs of a run on `boxes.len()` frames (letterboxed as
/// `boxes` say into `size` px): every output holds the frames' parts one after the other.
fn faces_of(
    raw: &[&[f32]],
    boxes: &[Letterbox],
    size: u32,
    params: &DetectParams,
) -> Result<Vec<Vec<Detection>>, SwapError> {
    let n = boxes.len();
    if let Some(j) = raw.iter().position(|data| data.len() % n != 0) {
        return Err(SwapError::DetectorOutput(format!(
            "output {j} has {} values, not a whole number for each of {n} frames",
            raw[j].len()
        )));
    }
    let mut result = Vec::with_capacity(n);
    for (k, lb) in boxes.iter().enumerate() {
        // Frame k's part of output j.
        let part = |j: usize| {
            let per = raw[j].len() / n;
            &raw[j][k * per..(k + 1) * per]
        };
        let strides: Vec<StrideOutput> = (0..3)
            .map(|j| StrideOutput {
                stride: STRIDES[j],
                scores: part(j),
                boxes: part(3 + j),
                kps: part(6 + j),
            })
            .collect();
        let found = decode(&strides, size, params.score_threshold)?;
        let kept = nms(found, params.nms_threshold);
        result.push(kept.iter().map(|d| to_frame(d, lb)).collect());
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64 px input: strides 8/16/32 have 8x8, 4x4 and 2x2 cells, two anchors each.
    fn empty(size: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let n = size * size * ANCHORS;
        (vec![0.0; n], vec![0.0; 4 * n], vec![0.0; 10 * n])
    }

    #[test]
    fn decodes_anchors_by_hand() {
        let (s8, b8, k8) = empty(8);
        let (mut s16, mut b16, mut k16) = empty(4);
        let (s32, b32, k32) = empty(2);
        // Stride 16, cell row 2, col 1 → centre (16, 32); second anchor → index (2·4+1)·2+1 = 19.
        s16[19] = 0.9;
        b16[19 * 4..19 * 4 + 4].copy_from_slice(&[0.5, 1.0, 1.5, 2.0]);
        for j in 0..5 {
            k16[19 * 10 + 2 * j] = j as f32 * 0.25; // x offsets 0, 0.25, ...
            k16[19 * 10 + 2 * j + 1] = -0.5; // y offset
        }
        // Just below the threshold: dropped.
        s16[3] = 0.49;
        let outs = [
            StrideOutput {
                stride: 8,
                scores: &s8,
                boxes: &b8,
                kps: &k8,
            },
            StrideOutput {
                stride: 16,
                scores: &s16,
                boxes: &b16,
                kps: &k16,
            },
            StrideOutput {
                stride: 32,
                scores: &s32,
                boxes: &b32,
                kps: &k32,
            },
        ];
        let d = decode(&outs, 64, 0.5).unwrap();
        assert_eq!(d.len(), 1);
        // Box: 16 − 0.5·16, 32 − 1·16, 16 + 1.5·16, 32 + 2·16.
        assert_eq!(d[0].bbox, [8.0, 16.0, 40.0, 64.0]);
        assert_eq!(d[0].kps[0], [16.0, 24.0]);
        assert_eq!(d[0].kps[4], [32.0, 24.0]);
        assert_eq!(d[0].score, 0.9);
    }

    #[test]
    fn wrong_output_sizes_are_errors() {
        let (s, b, k) = empty(8);
        let outs = [StrideOutput {
            stride: 8,
            scores: &s[1..],
            boxes: &b,
            kps: &k,
        }];
        assert!(matches!(
            decode(&outs, 64, 0.5),
            Err(SwapError::DetectorOutput(_))
        ));
    }

    #[test]
    fn nan_scores_and_coordinates_are_dropped() {
        let (mut s, mut b, k) = empty(2);
        s[0] = f32::NAN;
        s[1] = 0.8;
        b[4] = f32::INFINITY;
        let outs = [StrideOutput {
            stride: 32,
            scores: &s,
            boxes: &b,
            kps: &k,
        }];
        assert!(decode(&outs, 64, 0.5).unwrap().is_empty());
    }

    fn det(score: f32, bbox: [f32; 4]) -> Detection {
        Detection {
            score,
            bbox,
            kps: [[0.0; 2]; 5],
        }
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        // IoU of a=[0,0,10,10] and b=[1,0,11,10]: inter 90, union 110 → 0.818.
        assert!(
            (iou(&[0.0, 0.0, 10.0, 10.0], &[1.0, 0.0, 11.0, 10.0]) - 90.0 / 110.0).abs() < 1e-6
        );
        // c=[5,0,15,10] vs a: inter 50, union 150 → 0.333 (kept at threshold 0.4).
        let kept = nms(
            vec![
                det(0.7, [1.0, 0.0, 11.0, 10.0]),
                det(0.9, [0.0, 0.0, 10.0, 10.0]),
                det(0.8, [5.0, 0.0, 15.0, 10.0]),
                det(0.6, [100.0, 100.0, 120.0, 120.0]),
            ],
            0.4,
        );
        let scores: Vec<f32> = kept.iter().map(|d| d.score).collect();
        assert_eq!(scores, [0.9, 0.8, 0.6]);
        assert_eq!(iou(&[0.0; 4], &[0.0; 4]), 0.0);
    }

    #[test]
    fn letterbox_fill_converts_colours() {
        // 4x2 frame of pure grey Y=126, U=V=128 → RGB 127.33 → (127.33−127.5)/128.
        let frame = crate::media::I420Frame::filled(4, 2, 126, 128, 128).unwrap();
        let lb = Letterbox::new(4, 2, 8);
        assert_eq!((lb.scaled_w, lb.scaled_h), (8, 4));
        let mut buf = vec![PAD_VALUE; 3 * 64];
        fill_letterbox(Planes::of(&frame), &lb, &mut buf);
        let grey = (1.164_383 * 110.0 - 127.5) / 128.0;
        for c in 0..3 {
            for y in 0..8 {
                for x in 0..8 {
                    let v = buf[c * 64 + y * 8 + x];
                    let want = if y < 4 { grey } else { PAD_VALUE };
                    assert!((v - want).abs() < 1e-5, "c{c} ({x},{y}) {v} vs {want}");
                }
            }
        }
    }
}
