//! The two packaged models of the mesh tier: BlazeFace (the face detector, 128² input) and the
//! 468-point face mesh (192² input), as ONNX files converted from the TFLite originals by
//! `tools/convert_tflite.py`. Both take channel-first RGB; both see the frame through an affine
//! crop sampled straight from the I420 planes ([`crate::swap::paste::warp_crop`]).

use ort::value::TensorRef;

use super::{Roi, LANDMARKS};
use crate::infer::{Dim, InferError, Model, ModelSpec, ModelsConfig, Runtime, TensorSpec};
use crate::swap::color::Planes;
use crate::swap::detect::{nms, Detection};
use crate::swap::geometry::{Affine, Point};
use crate::swap::paste::warp_crop;
use crate::swap::SwapError;

/// Side of the mesh model's input crop.
pub const MESH_SIZE: usize = 192;
/// Side of BlazeFace's input.
pub const BLAZE_SIZE: usize = 128;
/// BlazeFace anchors: a 16×16 grid with 2 anchors per cell, then an 8×8 grid with 6.
pub const BLAZE_ANCHORS: usize = 16 * 16 * 2 + 8 * 8 * 6;

/// The mesh model's contract (`face_landmark.onnx`).
pub static MESH_SPEC: ModelSpec = ModelSpec {
    role: "face mesh",
    inputs: &[TensorSpec::named(
        "image",
        &[
            Dim::Fixed(1),
            Dim::Fixed(3),
            Dim::Fixed(MESH_SIZE as i64),
            Dim::Fixed(MESH_SIZE as i64),
        ],
    )],
    outputs: &[
        TensorSpec::named(
            "landmarks",
            &[Dim::Fixed(1), Dim::Fixed(3 * LANDMARKS as i64)],
        ),
        TensorSpec::named("presence", &[Dim::Fixed(1), Dim::Fixed(1)]),
    ],
};

/// BlazeFace's contract (`blazeface.onnx`).
pub static BLAZE_SPEC: ModelSpec = ModelSpec {
    role: "face detector (BlazeFace)",
    inputs: &[TensorSpec::named(
        "image",
        &[
            Dim::Fixed(1),
            Dim::Fixed(3),
            Dim::Fixed(BLAZE_SIZE as i64),
            Dim::Fixed(BLAZE_SIZE as i64),
        ],
    )],
    outputs: &[
        TensorSpec::named(
            "regressors",
            &[
                Dim::Fixed(1),
                Dim::Fixed(BLAZE_ANCHORS as i64),
                Dim::Fixed(16),
            ],
        ),
        TensorSpec::named(
            "classificators",
            &[
                Dim::Fixed(1),
                Dim::Fixed(BLAZE_ANCHORS as i64),
                Dim::Fixed(1),
            ],
        ),
    ],
};

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x.clamp(-100.0, 100.0)).exp())
}

/// Runs one named-input model on a planar tensor and copies out the named outputs.
fn run_named(
    model: &mut Model,
    input: &[f32],
    side: usize,
    outputs: &[(&str, usize)],
) -> Result<Vec<Vec<f32>>, SwapError> {
    let role = model.role();
    let t = TensorRef::from_array_view(([1usize, 3, side, side], input))
        .map_err(|e| model.run_error(e))?;
    let out = model
        .session_mut()
        .run(ort::inputs!["image" => t])
        .map_err(|e| InferError::Run {
            role,
            message: e.to_string(),
        })?;
    outputs
        .iter()
        .map(|&(name, len)| {
            let value = out
                .get(name)
                .ok_or_else(|| SwapError::ModelOutput(format!("{role}: no output `{name}`")))?;
            let (_, data) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| SwapError::ModelOutput(e.to_string()))?;
            if data.len() != len {
                return Err(SwapError::ModelOutput(format!(
                    "{role}: `{name}` has {} values, expected {len}",
                    data.len()
                )));
            }
            Ok(data.to_vec())
        })
        .collect()
}

/// One mesh result: 468 landmarks (x, y in frame pixels; z in the same scale, relative) and the
/// probability that the crop shows a face.
#[derive(Debug, Clone, PartialEq)]
pub struct Mesh {
    pub points: Vec<Point>,
    pub depth: Vec<f32>,
    pub presence: f32,
}

/// The face mesh model with its input buffer.
pub struct FaceMesh {
    model: Model,
    input: Vec<f32>,
}

impl FaceMesh {
    pub fn load(
        rt: &Runtime,
        config: &ModelsConfig,
        path: &std::path::Path,
    ) -> Result<Self, SwapError> {
        Ok(Self {
            model: Model::load(rt, config, path, &MESH_SPEC)?,
            input: vec![0.0; 3 * MESH_SIZE * MESH_SIZE],
        })
    }

    /// The mesh of the face inside `roi` of the frame.
    pub fn run(&mut self, planes: Planes, roi: &Roi) -> Result<Mesh, SwapError> {
        let to_frame = roi.crop_to_frame(MESH_SIZE);
        let mut crop = std::mem::take(&mut self.input);
        warp_crop(planes, &to_frame, MESH_SIZE, 1.0 / 255.0, 0.0, &mut crop);
        let mesh = self.run_crop(&crop, &to_frame);
        self.input = crop;
        mesh
    }

    /// The mesh of a 192² crop (planar RGB in [0,1]) whose pixels map to the frame through
    /// `to_frame`.
    pub fn run_crop(&mut self, crop: &[f32], to_frame: &Affine) -> Result<Mesh, SwapError> {
        let out = run_named(
            &mut self.model,
            crop,
            MESH_SIZE,
            &[("landmarks", 3 * LANDMARKS), ("presence", 1)],
        )?;
        let (raw, presence) = (&out[0], sigmoid(out[1][0]));
        let scale = to_frame.scale() as f32;
        let mut points = Vec::with_capacity(LANDMARKS);
        let mut depth = Vec::with_capacity(LANDMARKS);
        for p in raw.chunks_exact(3) {
            // The model's coordinates are continuous (pixel centres at +0.5), the map's are
            // pixel indices.
            points.push(to_frame.apply([p[0] - 0.5, p[1] - 0.5]));
            depth.push(p[2] * scale);
        }
        if !points.iter().flatten().all(|v| v.is_finite()) || !presence.is_finite() {
            return Err(SwapError::ModelOutput(
                "face mesh: non-finite landmarks".into(),
            ));
        }
        Ok(Mesh {
            points,
            depth,
            presence,
        })
    }
}

/// BlazeFace with its input buffer and anchors.
pub struct BlazeFace {
    model: Model,
    input: Vec<f32>,
    anchors: Vec<Point>,
}

/// BlazeFace's anchor centres, normalised to the input, in the model's output order.
pub fn blaze_anchors() -> Vec<Point> {
    let mut anchors = Vec::with_capacity(BLAZE_ANCHORS);
    for (grid, per_cell) in [(16usize, 2usize), (8, 6)] {
        for y in 0..grid {
            for x in 0..grid {
                let c = [
                    (x as f32 + 0.5) / grid as f32,
                    (y as f32 + 0.5) / grid as f32,
                ];
                anchors.extend(std::iter::repeat_n(c, per_cell));
            }
        }
    }
    anchors
}

/// The input crop's map: the frame fitted into the square, centred (pixel indices).
pub fn blaze_crop_to_frame(width: u32, height: u32) -> Affine {
    let s = f64::from(width.max(height)) / BLAZE_SIZE as f64;
    let ox = (f64::from(width) - BLAZE_SIZE as f64 * s) / 2.0;
    let oy = (f64::from(height) - BLAZE_SIZE as f64 * s) / 2.0;
    Affine([[s, 0.0, 0.5 * s + ox - 0.5], [0.0, s, 0.5 * s + oy - 0.5]])
}

/// Decodes BlazeFace's raw outputs into detections in frame pixels (through `to_frame`, the
/// map of the input crop): anchor-relative centre, size and six keypoints, in input pixels.
/// The keypoints come as the subject's right eye, left eye, nose tip, mouth centre and two ear
/// points; a [`Detection`] gets the eyes in image order (left of the image first), the nose,
/// and the mouth centre for both mouth corners.
pub fn blaze_decode(
    regressors: &[f32],
    scores: &[f32],
    anchors: &[Point],
    to_frame: &Affine,
    threshold: f32,
    nms_threshold: f32,
) -> Vec<Detection> {
    let n = BLAZE_SIZE as f32;
    let mut found = Vec::new();
    for (i, (r, &raw)) in regressors.chunks_exact(16).zip(scores).enumerate() {
        let score = sigmoid(raw);
        if score.is_nan() || score < threshold {
            continue;
        }
        let [ax, ay] = anchors[i];
        // Continuous input pixels → frame pixel indices.
        let at = |dx: f32, dy: f32| to_frame.apply([ax * n + dx - 0.5, ay * n + dy - 0.5]);
        let (cx, cy, w, h) = (r[0], r[1], r[2], r[3]);
        let p0 = at(cx - w / 2.0, cy - h / 2.0);
        let p1 = at(cx + w / 2.0, cy + h / 2.0);
        let kp = |k: usize| at(r[4 + 2 * k], r[5 + 2 * k]);
        let d = Detection {
            score,
            bbox: [p0[0], p0[1], p1[0], p1[1]],
            kps: [kp(0), kp(1), kp(2), kp(3), kp(3)],
        };
        if d.bbox
            .iter()
            .chain(d.kps.iter().flatten())
            .all(|v| v.is_finite())
            && w > 0.0
            && h > 0.0
        {
            found.push(d);
        }
    }
    let mut kept = nms(found, nms_threshold);
    for d in &mut kept {
        if d.kps[0][0] > d.kps[1][0] {
            d.kps.swap(0, 1);
        }
    }
    kept
}

impl BlazeFace {
    pub fn load(
        rt: &Runtime,
        config: &ModelsConfig,
        path: &std::path::Path,
    ) -> Result<Self, SwapError> {
        Ok(Self {
            model: Model::load(rt, config, path, &BLAZE_SPEC)?,
            input: vec![0.0; 3 * BLAZE_SIZE * BLAZE_SIZE],
            anchors: blaze_anchors(),
        })
    }

    /// Faces of the frame, best score first.
    pub fn detect(
        &mut self,
        planes: Planes,
        threshold: f32,
        nms_threshold: f32,
    ) -> Result<Vec<Detection>, SwapError> {
        let to_frame = blaze_crop_to_frame(planes.width as u32, planes.height as u32);
        warp_crop(
            planes,
            &to_frame,
            BLAZE_SIZE,
            1.0 / 127.5,
            -1.0,
            &mut self.input,
        );
        let out = run_named(
            &mut self.model,
            &self.input,
            BLAZE_SIZE,
            &[
                ("regressors", 16 * BLAZE_ANCHORS),
                ("classificators", BLAZE_ANCHORS),
            ],
        )?;
        Ok(blaze_decode(
            &out[0],
            &out[1],
            &self.anchors,
            &to_frame,
            threshold,
            nms_threshold,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_are_in_model_order() {
        let a = blaze_anchors();
        assert_eq!(a.len(), BLAZE_ANCHORS);
        assert_eq!(a[0], [0.5 / 16.0, 0.5 / 16.0]);
        assert_eq!(a[1], a[0]);
        assert_eq!(a[2], [1.5 / 16.0, 0.5 / 16.0]);
        assert_eq!(a[512], [0.5 / 8.0, 0.5 / 8.0]);
        assert_eq!(a[517], a[512]);
        assert_eq!(a[518], [1.5 / 8.0, 0.5 / 8.0]);
    }

    #[test]
    fn decodes_one_anchor_into_frame_pixels() {
        // A 640x480 frame: 5 frame px per input px, the square starts 80 px above the frame.
        let to_frame = blaze_crop_to_frame(640, 480);
        assert_eq!(to_frame.apply([-0.5 + 64.0, -0.5 + 64.0]), [319.5, 239.5]);
        let anchors = blaze_anchors();
        let mut reg = vec![0.0; 16 * BLAZE_ANCHORS];
        let mut cls = vec![-10.0; BLAZE_ANCHORS];
        // Anchor 512 + 6·(8·3 + 4) sits at cell (4, 3) of the 8×8 grid: centre (72, 56) px.
        let i = 512 + 6 * (8 * 3 + 4);
        cls[i] = 3.0;
        reg[16 * i..16 * i + 4].copy_from_slice(&[2.0, -4.0, 40.0, 48.0]);
        // Subject's right eye (image left) at +(−10, −8), left eye at +(10, −8).
        reg[16 * i + 4..16 * i + 8].copy_from_slice(&[-10.0, -8.0, 10.0, -8.0]);
        let d = blaze_decode(&reg, &cls, &anchors, &to_frame, 0.5, 0.3);
        assert_eq!(d.len(), 1);
        let (cx, cy) = (72.0 + 2.0, 56.0 - 4.0);
        let f = |x: f32, y: f32| [x * 5.0 - 0.5, y * 5.0 - 80.5];
        let close = |a: Point, b: Point| (a[0] - b[0]).abs() < 1e-3 && (a[1] - b[1]).abs() < 1e-3;
        assert!(
            close([d[0].bbox[0], d[0].bbox[1]], f(cx - 20.0, cy - 24.0)),
            "{:?}",
            d[0]
        );
        assert!(close(d[0].kps[0], f(62.0, 48.0)) && close(d[0].kps[1], f(82.0, 48.0)));
        assert!((d[0].score - sigmoid(3.0)).abs() < 1e-6);
        // Below the threshold: nothing.
        cls[i] = -1.0;
        assert!(blaze_decode(&reg, &cls, &anchors, &to_frame, 0.5, 0.3).is_empty());
    }
}
