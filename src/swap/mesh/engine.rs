//! The mesh swapper for single pictures (`facerelay swap`, tests): detector, face mesh and
//! renderer with one owner, no schedulers.

use super::model::FaceMesh;
use super::render::{render, ColourState, RenderScratch, RenderSettings};
use super::{mesh_detection, MeshSource, Roi, Topology};
use crate::infer::scheduler::BatchRunner;
use crate::infer::ModelsConfig;
use crate::media::I420Frame;
use crate::swap::color::Planes;
use crate::swap::geometry::Point;
use crate::swap::live::DetectRunner;
use crate::swap::{
    by_area, largest, Detection, Selection, SourceFace, StageTimings, SwapConfig, SwapError,
    SwapReport, SwappedFace,
};

/// The mesh tier's models with one owner.
pub struct MeshEngine {
    detector: DetectRunner,
    mesh: FaceMesh,
    topology: Topology,
    config: SwapConfig,
    scratch: RenderScratch,
}

impl MeshEngine {
    /// Loads the packaged detector (`swap.mesh_detector`), the face mesh and its topology.
    pub fn load(models: &ModelsConfig, config: &SwapConfig) -> Result<Self, SwapError> {
        let rt = crate::infer::runtime(models)?;
        Ok(Self {
            detector: DetectRunner::load_packaged(models, config)?,
            mesh: FaceMesh::load(rt, models, &models.mesh_path())?,
            topology: Topology::load(&models.topology_path())?,
            config: config.clone(),
            scratch: RenderScratch::default(),
        })
    }

    pub fn config(&self) -> &SwapConfig {
        &self.config
    }

    /// Faces of a frame, best score first.
    pub fn detect(&mut self, frame: &I420Frame) -> Result<Vec<Detection>, SwapError> {
        Ok(self
            .detector
            .run(vec![frame.clone()])?
            .pop()
            .unwrap_or_default())
    }

    /// The 468 landmarks of a detected face (a crop from the detection, then one from the
    /// landmarks it gave, as the live tracker does), or `None` when the mesh model says the
    /// crop shows no face (presence below `swap.mesh_presence`).
    pub fn landmarks(
        &mut self,
        frame: &I420Frame,
        face: &Detection,
    ) -> Result<Option<Vec<Point>>, SwapError> {
        let threshold = self.config.mesh_presence;
        super::landmarks_of(face, threshold, |roi| self.mesh.run(Planes::of(frame), roi))
    }

    /// The mesh of the face inside `roi` (the live tracker's step), with its presence.
    pub fn track(&mut self, frame: &I420Frame, roi: &Roi) -> Result<super::Mesh, SwapError> {
        self.mesh.run(Planes::of(frame), roi)
    }

    /// The source face of the largest face of a photo (as I420).
    pub fn source_face(&mut self, frame: &I420Frame) -> Result<SourceFace, SwapError> {
        let faces = self.detect(frame)?;
        let face = largest(&faces).ok_or(SwapError::NoSourceFace(None))?;
        let points = self
            .landmarks(frame, &face)?
            .ok_or(SwapError::NoSourceFace(None))?;
        Ok(SourceFace::of_mesh(
            MeshSource::new(frame, &points)?,
            mesh_detection(&points, face.score),
        ))
    }

    /// Swaps the selected faces of `frame` with `source` (every face for
    /// [`Selection::All`]; a reference face needs the deep tier's recognizer).
    pub fn swap_frame(
        &mut self,
        frame: &mut I420Frame,
        source: &SourceFace,
        selection: &Selection,
    ) -> Result<SwapReport, SwapError> {
        let start = std::time::Instant::now();
        let mesh_source = source.mesh.clone().ok_or_else(|| {
            SwapError::ModelOutput("this source face was made for the deep swapper".into())
        })?;
        let detected = self.detect(frame)?;
        let chosen = match selection {
            Selection::Largest => largest(&detected).into_iter().collect(),
            Selection::All => by_area(&detected, usize::MAX),
            Selection::Reference { .. } => {
                return Err(SwapError::ModelOutput(
                    "--reference needs the deep models (the mesh swapper has no recognizer)".into(),
                ))
            }
        };
        // Every mesh first, from the untouched frame: a face swapped first must not change
        // what the next face's mesh sees.
        let mut meshes = Vec::with_capacity(chosen.len());
        for face in chosen {
            if let Some(points) = self.landmarks(frame, &face)? {
                meshes.push((face, points));
            }
        }
        let settings = RenderSettings {
            feather: self.config.mesh_feather,
            colour_smoothing: 1.0,
            colour_match: self.config.colour_match,
            keep_eyes_mouth: self.config.keep_eyes_mouth,
        };
        let mut swapped = Vec::with_capacity(meshes.len());
        for (face, points) in meshes {
            let mut colour = ColourState::default();
            if let Some(bx) = render(
                frame,
                &points,
                &mesh_source,
                &self.topology,
                &settings,
                &mut colour,
                &mut self.scratch,
            ) {
                swapped.push(SwappedFace {
                    detection: face,
                    paste_box: bx,
                    mesh: Some(points),
                });
            }
        }
        Ok(SwapReport {
            detected,
            swapped,
            timings: StageTimings {
                total: start.elapsed(),
                ..StageTimings::default()
            },
        })
    }
}
