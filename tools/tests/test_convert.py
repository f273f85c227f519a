"""The converted MediaPipe models against the originals, on real faces.

(a) face_landmark.onnx and blazeface.onnx, run by ONNX Runtime, give what the original TFLite
    models give when LiteRT (ai-edge-litert) runs them, on face crops cut from the packaged
    photos, within the tolerances below; and their outputs mean what models/README.md says
    (mesh points land on the eyes, nose and mouth; BlazeFace's best anchor decodes onto the face).
(b) Converting again, in fresh processes, gives byte-identical files, equal to the manifest.

Measured on the development machine (x86-64, ONNX Runtime 1.32.0 vs LiteRT 2.3.0 with XNNPACK):
largest differences 1.2e-4 px on landmarks, 1e-5 on the presence logit, 9e-5 px on BlazeFace
regressors and 7e-5 on its logits; mesh keypoints within 0.076 of the inter-ocular distance of
the reference points (9.5 px on Gauss, 3.2 px on Newton); BlazeFace eyes within 2.1 px of them
in its 128-px frame. The limits leave room for other CPUs' summation order.
"""

import hashlib
import json
import os
import shlex
import subprocess
import sys
import zipfile

import numpy as np
import onnxruntime as ort
import pytest
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

import packaged_models
from convert_tflite import ConversionError, convert

# Conversion tolerances (max abs difference, ONNX Runtime vs LiteRT).
LANDMARK_PX = 5e-3  # in pixels of the 192-px mesh input
PRESENCE_LOGIT = 1e-3
REGRESSOR_PX = 5e-3  # in pixels of the 128-px BlazeFace input
CLASS_LOGIT = 1e-3
# Meaning: the largest allowed distance from the reference keypoints, as a fraction of their
# inter-ocular distance.
MESH_KEYPOINT_IOD = 0.10
BLAZEFACE_EYE_IOD = 0.15

# Reference faces in the packaged photos: the SCRFD detections (box, then eye, eye, nose tip,
# mouth corner, mouth corner, each pair left to right in the image) that the scrfd package's own
# tests expect. Image coordinates in pixels.
FACES = {
    "newton.png": ((334, 89, 438, 232), [(371, 143), (419, 145), (399, 177), (371, 197), (409, 199)]),
    "gauss.png": ((376, 203, 654, 568), [(469, 353), (594, 346), (549, 436), (487, 489), (589, 482)]),
}
# The same five points on the 468-point mesh. The eyes are the mean of their two corners. The
# mesh's "right" eye (33, 133) is the person's right, on the left of the image.
MESH_POINTS = [(33, 133), (263, 362), (1,), (61,), (291,)]


def crop(photo, box, size):
    """The square around a face box, 1.5 times its longer side, resized to size x size (RGB,
    0..255, float32), and the map back: image = crop * scale + (left, top)."""
    x0, y0, x1, y1 = box
    side = 1.5 * max(x1 - x0, y1 - y0)
    left, top = (x0 + x1 - side) / 2, (y0 + y1 - side) / 2
    image = Image.open(photo).convert("RGB")
    out = image.transform((size, size), Image.Transform.EXTENT, (left, top, left + side, top + side),
                          Image.Resampling.BILINEAR)
    return np.asarray(out, np.float32), (left, top, side / size)


def nchw(x):
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def litert(entry):
    it = Interpreter(model_content=packaged_models.member(entry))
    it.allocate_tensors()

    def run(x):
        it.set_tensor(it.get_input_details()[0]["index"], x[None])
        it.invoke()
        return [it.get_tensor(d["index"]) for d in it.get_output_details()]

    return run


def iod(points):
    return float(np.hypot(*np.subtract(points[0], points[1])))


@pytest.fixture(scope="module")
def mesh(packaged, entries):
    session = ort.InferenceSession(str(packaged / "face_landmark.onnx"), providers=["CPUExecutionProvider"])
    return session, litert(entries["face_landmark.onnx"])


@pytest.fixture(scope="module")
def blazeface(packaged, entries):
    session = ort.InferenceSession(str(packaged / "blazeface.onnx"), providers=["CPUExecutionProvider"])
    return session, litert(entries["blazeface.onnx"])


def test_onnx_contracts(mesh, blazeface):
    def io(session):
        return ([(i.name, i.type, i.shape) for i in session.get_inputs()],
                [(o.name, o.type, o.shape) for o in session.get_outputs()])

    assert io(mesh[0]) == (
        [("image", "tensor(float)", [1, 3, 192, 192])],
        [("landmarks", "tensor(float)", [1, 1404]), ("presence", "tensor(float)", [1, 1])],
    )
    assert io(blazeface[0]) == (
        [("image", "tensor(float)", [1, 3, 128, 128])],
        [("regressors", "tensor(float)", [1, 896, 16]), ("classificators", "tensor(float)", [1, 896, 1])],
    )


@pytest.mark.parametrize("photo", sorted(FACES))
def test_face_mesh_matches_tflite_and_lands_on_the_face(packaged, mesh, photo):
    box, truth = FACES[photo]
    x, (left, top, scale) = crop(packaged / "photos" / photo, box, 192)
    x /= 255.0  # the mesh takes RGB in [0, 1]
    landmarks, presence = mesh[0].run(None, {"image": nchw(x)})
    ref_landmarks, ref_presence = mesh[1](x)

    diff = np.abs(landmarks - ref_landmarks.reshape(1, 1404)).max()
    assert diff <= LANDMARK_PX, f"landmarks differ from TFLite by {diff} px"
    diff = np.abs(presence - ref_presence.reshape(1, 1)).max()
    assert diff <= PRESENCE_LOGIT, f"presence differs from TFLite by {diff}"

    assert presence[0, 0] > 5.0, "a face is there: the presence logit should be high"
    points = landmarks.reshape(468, 3)[:, :2] * scale + (left, top)
    # "left" in the topology is the person's left: the right of the image.
    topo = json.loads((packaged / "face_mesh_topology.json").read_text())
    assert points[topo["left_eye"], 0].mean() > points[topo["right_eye"], 0].mean()
    for idx, want in zip(MESH_POINTS, truth):
        got = points[list(idx)].mean(axis=0)
        err = float(np.hypot(*(got - want)))
        assert err <= MESH_KEYPOINT_IOD * iod(truth), f"mesh {idx} at {got}, reference {want}: {err:.1f} px"


def blazeface_anchors():
    """Anchor centres (x, y) in input pixels, in the order of BlazeFace's 896 outputs: a 16x16
    grid with 2 anchors per cell, then an 8x8 grid with 6, row by row."""
    out = []
    for grid, per_cell in ((16, 2), (8, 6)):
        stride = 128 / grid
        for row in range(grid):
            for col in range(grid):
                out += [((col + 0.5) * stride, (row + 0.5) * stride)] * per_cell
    return np.array(out)


@pytest.mark.parametrize("photo", sorted(FACES))
def test_blazeface_matches_tflite_and_finds_the_face(packaged, blazeface, photo):
    box, truth = FACES[photo]
    x, (left, top, scale) = crop(packaged / "photos" / photo, box, 128)
    x = x / 127.5 - 1.0  # BlazeFace takes RGB in [-1, 1]
    regressors, classificators = blazeface[0].run(None, {"image": nchw(x)})
    ref_regressors, ref_classificators = blazeface[1](x)

    diff = np.abs(regressors - ref_regressors).max()
    assert diff <= REGRESSOR_PX, f"regressors differ from TFLite by {diff} px"
    diff = np.abs(classificators - ref_classificators).max()
    assert diff <= CLASS_LOGIT, f"classificators differ from TFLite by {diff}"

    best = int(classificators[0, :, 0].argmax())
    assert classificators[0, best, 0] > 1.0, "a face is there: the best score should be high"
    anchor = blazeface_anchors()[best]
    r = regressors[0, best]
    centre = anchor + r[0:2]
    assert np.hypot(*(centre - 64)) < 0.15 * 128, f"box centre {centre}, the face is at the crop's centre"
    # Keypoints 0 and 1 are the person's right and left eye: image left, then right.
    truth_crop = [((px - left) / scale, (py - top) / scale) for px, py in truth[:2]]
    for k, want in enumerate(truth_crop):
        got = anchor + r[4 + 2 * k : 6 + 2 * k]
        err = float(np.hypot(*(got - want)))
        assert err <= BLAZEFACE_EYE_IOD * iod(truth_crop), f"eye {k} at {got}, reference {want}"


@pytest.mark.parametrize("name", ["blazeface.onnx", "face_landmark.onnx", "face_mesh_topology.json"])
def test_conversion_is_byte_identical(tmp_path, entries, name):
    """Made twice in fresh processes (different hash seeds): the same bytes, the manifest's."""
    entry = entries[name]
    src = tmp_path / os.path.basename(entry["member"])
    src.write_bytes(packaged_models.member(entry))
    tool, *args = shlex.split(entry["made_with"])
    digests = []
    for seed in ("1", "2"):
        dest = tmp_path / f"{seed}-{name}"
        env = dict(os.environ, PYTHONHASHSEED=seed)
        subprocess.run([sys.executable, str(packaged_models.ROOT / tool), str(src), str(dest), *args],
                       check=True, env=env, capture_output=True)
        digests.append(hashlib.sha256(dest.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    assert digests[0] == entry["sha256"]


def test_unsupported_operator_is_named(entries):
    """The wheel's full-range detector stores sparse weights (DENSIFY): refused, by name."""
    wheel = packaged_models.archive(entries["blazeface.onnx"])
    with zipfile.ZipFile(wheel) as z:
        data = z.read("mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite")
    with pytest.raises(ConversionError, match="TFLite operator DENSIFY is not supported"):
        convert(data, "image", [("regressors", None), ("classificators", None)])
