//! The face mesh's topology: which of the 468 landmarks make the triangles of the mesh and the
//! closed outlines (face oval, eyes, lips) that the masks are cut from. The set-up writes it as
//! `face_mesh_topology.json` beside the mesh model, from the same package.

use std::path::Path;

use serde::Deserialize;

use super::LANDMARKS;
use crate::swap::SwapError;

/// Triangles and outlines over landmark indices, checked on load.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Topology {
    /// The faces of the mesh: every landmark triangle of the tesselation.
    pub triangles: Vec<[u16; 3]>,
    /// Closed outlines, each an ordered loop of landmark indices.
    pub face_oval: Vec<u16>,
    pub lips_inner: Vec<u16>,
    pub left_eye: Vec<u16>,
    pub right_eye: Vec<u16>,
}

#[derive(Deserialize)]
struct File {
    triangles: Vec<[u16; 3]>,
    face_oval: Vec<u16>,
    lips_inner: Vec<u16>,
    left_eye: Vec<u16>,
    right_eye: Vec<u16>,
}

impl Topology {
    /// Reads and checks the topology file: indices within the mesh, enough triangles, loops of
    /// at least three points.
    pub fn load(path: &Path) -> Result<Self, SwapError> {
        let err = |message: String| SwapError::Image {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Self::parse(&text).map_err(err)
    }

    /// [`Self::load`] of the file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let f: File =
            serde_json::from_str(text).map_err(|e| format!("not a mesh topology: {e}"))?;
        let t = Topology {
            triangles: f.triangles,
            face_oval: f.face_oval,
            lips_inner: f.lips_inner,
            left_eye: f.left_eye,
            right_eye: f.right_eye,
        };
        let max = LANDMARKS as u16;
        if t.triangles.len() < 100 {
            return Err(format!("only {} triangles", t.triangles.len()));
        }
        if t.triangles.iter().flatten().any(|&i| i >= max) {
            return Err(format!("a triangle names a landmark past {max}"));
        }
        for (name, l) in t.loops() {
            if l.len() < 3 || l.iter().any(|&i| i >= max) {
                return Err(format!("outline {name} is not a loop of mesh landmarks"));
            }
        }
        Ok(t)
    }

    fn loops(&self) -> [(&'static str, &[u16]); 4] {
        [
            ("face_oval", &self.face_oval),
            ("lips_inner", &self.lips_inner),
            ("left_eye", &self.left_eye),
            ("right_eye", &self.right_eye),
        ]
    }
}
