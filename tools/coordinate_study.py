#!/usr/bin/env python3
"""Which way back from the detector's 640x640 input to the frame fits the SCRFD detector?

facerelay letterboxes a frame into the detector input by shrinking it k times (s = 1/k =
scaled size / frame size, pixel centres aligned as a bilinear resize samples) and maps the
detections back with one of two formulas:

    centre-aligned  x_frame = (x_det + 0.5) / s - 0.5   (what src/swap/geometry.rs does now)
    edge-aligned    x_frame = x_det / s                  (insightface, the `scrfd` package)

They differ by 0.5 (k - 1) px. Both are members of one family, x_frame = (x_det - c) / s + c,
where c is where the detector puts the centre of a pixel relative to "pixel index" coordinates:
c = -0.5 is the centre-aligned formula (the detector reports pixel i's centre as i), c = 0 the
edge-aligned one (it reports i + 0.5). This script measures c on the packaged photos.

Experiment A (integer shrink, the main evidence): each photo is run through the detector at
k = 1 (cut into 640x640 tiles, no resampling at all): these detections are the reference. Then
the photo is shrunk by k = 2..6 by averaging k x k blocks, for every one of the k*k phases (the
first px columns and py rows dropped first), whose geometry is exact: a small pixel covers big
pixels [k i + p, k i + p + k). The detections are mapped back with both formulas (plus p) and
compared with the reference. The formula that fits the detector shows no drift with k; the
other drifts by 0.5 (k - 1). c is fitted per k: c = -mean(edge-aligned error) / (k - 1), with
a standard error from the spread between faces.

Which points measure c: the eyes (both axes) and the x of all five points. As faces get
smaller the detector also changes the face's shape, the same way under either formula: the
mouth corners and the nose tip move up and the mouth corners apart, and the box centre moves
down by about 1.3 px between k = 1 and k >= 2. In x those changes cancel over the left-right
symmetric points; in y they do not, so the y of the nose and mouth says nothing about c.

Experiment B (facerelay's own letterbox): 4:3 windows of 640k x 480k px are cut from each photo
(black beyond its edges, a few origins per k), letterboxed as src/swap/detect.rs does (scaled
size rounded, bilinear with aligned centres, no antialiasing) for non-integer k too, and mapped
back with both formulas; compared with the same references.

Mirror check (scale-free): a canvas and its mirror image; if the detector reports pixel i's
centre as i + 0.5 + c, a point at x comes back at 640 + 2c - x, so c = (mean(x + x') - 640) / 2.

Decoder check: the `scrfd` package's test truths for newton.png and gauss.png (copied into
tools/tests/test_convert.py) are reproduced from the package's own pipeline (nearest-neighbour
resize, x_det * det_scale, int()), which validates the decoder here and shows that those
truths are the package's outputs, not independent ground truth. (Upscaling a photo u times
and letterboxing it again does not help either: the detector then sees the same 640 px picture
for every u, and with aligned centres both formulas give the same map for every u.)

Run (25-40 s on 2 cores; deterministic; needs the packaged set, scripts/setup.sh):

    .deps/venv-models/bin/python tools/coordinate_study.py [--json OUT.json]

Prints tables, then the whole result as one JSON object (also written to OUT.json if given).
Errors are in original photo pixels, "mapped minus reference"; keypoints are the five SCRFD
points, "box centre" the centre of the box.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PACKAGED = ROOT / "models" / "packaged"
SIZE = 640
STRIDES = (8, 16, 32)
SCORE = 0.5
NMS = 0.4
PHOTOS = ("newton.png", "gauss.png", "solvay_conference_1927.jpg")
# The scrfd package's test truths (its detections, truncated by int()): box x1 y1 x2 y2, then
# the five keypoints.
PACKAGE_TRUTH = {
    "newton.png": ((334, 89, 438, 232), ((371, 143), (419, 145), (399, 177), (371, 197), (409, 199))),
    "gauss.png": ((376, 203, 654, 568), ((469, 353), (594, 346), (549, 436), (487, 489), (589, 482))),
}
A_FACTORS = (2, 3, 4, 5, 6)
B_FACTORS = (1.5, 2.5, 3.5, 4.5, 6.0)
# Window origins (px) of experiment B, added to the positions that cover the faces.
B_JITTER = ((0, 0), (1, 2), (2, 5), (3, 1))
TILE_STEP = 256
MARGIN = 8  # a detection within this many detector px of a cut edge is dropped
CONVENTIONS = {"edge": 0.0, "centre": -0.5}  # c of x_frame = (x_det - c) * k + c


class Detector:
    def __init__(self, path):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        names = [o.name for o in self.session.get_outputs()]
        want = [f"{kind}_{s}" for kind in ("score", "bbox", "kps") for s in STRIDES]
        assert names == want, names
        self.centres = []
        for s in STRIDES:
            n = SIZE // s
            ys, xs = np.mgrid[:n, :n]
            c = np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float64) * s
            self.centres.append(np.repeat(c, 2, axis=0))  # two anchors per cell
        self.runs = 0

    def __call__(self, canvas):
        """canvas: (640, 640, 3) RGB 0..255. Returns scores (N,), boxes (N, 4), kps (N, 5, 2)
        in detector pixels, after the score threshold and NMS."""
        x = ((canvas.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
        outs = self.session.run(None, {self.input: np.ascontiguousarray(x)})
        self.runs += 1
        scores, boxes, kps = [], [], []
        for i, s in enumerate(STRIDES):
            sc = outs[i].reshape(-1)
            keep = sc >= SCORE
            if not keep.any():
                continue
            c = self.centres[i][keep]
            d = outs[i + 3].reshape(-1, 4)[keep].astype(np.float64) * s
            k = outs[i + 6].reshape(-1, 5, 2)[keep].astype(np.float64) * s
            scores.append(sc[keep].astype(np.float64))
            boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], 1))
            kps.append(c[:, None, :] + k)
        if not scores:
            return np.zeros(0), np.zeros((0, 4)), np.zeros((0, 5, 2))
        scores, boxes, kps = map(np.concatenate, (scores, boxes, kps))
        order = np.argsort(-scores, kind="stable")
        kept = []
        for i in order:
            if all(iou(boxes[i], boxes[j]) <= NMS for j in kept):
                kept.append(i)
        return scores[kept], boxes[kept], kps[kept]


def iou(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def canvas_of(img):
    c = np.zeros((SIZE, SIZE, 3), np.float32)
    c[: img.shape[0], : img.shape[1]] = img
    return c


def starts(n):
    if n <= SIZE:
        return [0]
    return list(range(0, n - SIZE, TILE_STEP)) + [n - SIZE]


def inner_distance(box, x0, y0, tw, th, w, h):
    """Distance of a box (tile pixels) from the tile's cut edges (edges inside the image)."""
    d = [np.inf]
    if x0 > 0:
        d.append(box[0])
    if y0 > 0:
        d.append(box[1])
    if x0 + tw < w:
        d.append(tw - box[2])
    if y0 + th < h:
        d.append(th - box[3])
    return min(d)


def detect_tiled(det, img, canvases=None):
    """Detections on an image of any size: 640x640 tiles, no resampling; a face cut by a tile
    edge is taken from another tile. Returns a list of (score, box (4,), kps (5, 2)) in image
    pixels (detector coordinates plus the integer tile origin)."""
    h, w = img.shape[:2]
    found = []
    for y0 in starts(h):
        for x0 in starts(w):
            tile = img[y0 : y0 + SIZE, x0 : x0 + SIZE]
            th, tw = tile.shape[:2]
            canvas = canvas_of(tile)
            if canvases is not None:
                canvases.append(canvas)
            for sc, box, kp in zip(*det(canvas)):
                dist = inner_distance(box, x0, y0, tw, th, w, h)
                if dist < MARGIN:
                    continue
                off = np.array([x0, y0], np.float64)
                found.append((dist, sc, box + np.tile(off, 2), kp + off))
    found.sort(key=lambda f: (-f[0], -f[1]))
    kept = []
    for f in found:
        if all(iou(f[2], g[2]) < 0.3 for g in kept):
            kept.append(f)
    return [(sc, box, kp) for _, sc, box, kp in kept]


def area_shrink(img, k, px, py):
    h, w = (img.shape[0] - py) // k, (img.shape[1] - px) // k
    block = img[py : py + h * k, px : px + w * k].reshape(h, k, w, k, 3)
    return block.mean(axis=(1, 3), dtype=np.float64).astype(np.float32)


def to_frame(v, k, c):
    """Detector coordinate(s) v -> frame, for a shrink by k (s = 1/k), convention c."""
    return (v - c) * k + c


def points(box, kp):
    """(7, 2): five keypoints, box centre, box size (size is not convention-dependent)."""
    centre = (box[:2] + box[2:]) / 2
    return np.concatenate([kp, centre[None], (box[2:] - box[:2])[None]])


def match(refs, box):
    best, idx = 0.5, None
    for i, (_, rbox, _) in enumerate(refs):
        o = iou(rbox, box)
        if o >= best:
            best, idx = o, i
    return idx


GROUPS = {"eyes": [0, 1], "nose": [2], "mouth": [3, 4], "kps": [0, 1, 2, 3, 4], "box": [5]}


def fit_c(e, km1, faces):
    """Least squares c in  e = -c (k - 1)  (e: (N, P) errors of one axis or both, km1: (N,)),
    and an approximate standard error from the spread of per-face estimates."""
    km1 = np.broadcast_to(km1[:, None], e.shape)
    c = -(e * km1).sum() / (km1**2).sum()
    per = [-(e[faces == f] * km1[faces == f]).sum() / (km1[faces == f] ** 2).sum() for f in np.unique(faces)]
    se = float(np.std(per, ddof=1) / np.sqrt(len(per))) if len(per) > 1 else None
    return float(c), se


def summary(samples):
    """samples: list of (face id, k, mapped dict convention -> (7, 2), reference (7, 2))."""
    ks = np.array([s[1] for s in samples], np.float64)
    faces = np.array([s[0] for s in samples])
    out = {"samples": len(samples), "faces": int(len(np.unique(faces))), "k_mean": float(ks.mean())}
    errors = {conv: np.array([s[2][conv] - s[3] for s in samples]) for conv in CONVENTIONS}
    for conv, e in errors.items():
        r = {}
        for g, idx in GROUPS.items():
            r[f"{g}_dx"] = float(e[:, idx, 0].mean())
            r[f"{g}_dy"] = float(e[:, idx, 1].mean())
        r["kps_rms"] = float(np.sqrt((e[:, :5] ** 2).sum(-1).mean()))
        out[conv] = r
    out["box_size_ratio"] = float(np.mean([s[2]["edge"][6] / s[3][6] for s in samples]))
    if np.all(ks > 1):
        e, km1 = errors["edge"], ks - 1.0
        fits = {
            "eyes": e[:, [0, 1], :].reshape(len(e), -1),
            "eyes_x": e[:, [0, 1], 0],
            "eyes_y": e[:, [0, 1], 1],
            "kps_x": e[:, :5, 0],
            "kps_y": e[:, :5, 1],
        }
        out["c"] = {}
        for g, v in fits.items():
            c, se = fit_c(v, km1, faces)
            out["c"][g] = {"c": c, "se": se}
        if np.ptp(ks) > 0:
            # With a free constant (a detector bias that is the same at every k > 1): the
            # slope alone decides, e = a - c (k - 1).
            v = fits["eyes"]
            slope, const = np.polyfit(np.repeat(km1, v.shape[1]), v.ravel(), 1)
            out["c"]["eyes_slope"] = {"c": float(-slope), "constant": float(const)}
    return out


def experiment_a(det, refs, crops):
    rows, everything = {}, []
    for k in A_FACTORS:
        samples, missed = [], 0
        for name in PHOTOS:
            img, (ox, oy) = crops[name]
            seen = np.zeros(len(refs[name]), int)
            for py in range(k):
                for px in range(k):
                    small = area_shrink(img, k, px, py)
                    shift = np.array([px + ox, py + oy], np.float64)
                    for _, box, kp in detect_tiled(det, small):
                        mapped = {
                            conv: points(to_frame(box, k, c) + np.tile(shift, 2), to_frame(kp, k, c) + shift)
                            for conv, c in CONVENTIONS.items()
                        }
                        i = match(refs[name], box_of(mapped["edge"]))
                        if i is None:
                            continue
                        seen[i] += 1
                        samples.append((f"{name}#{i}", k, mapped, points(refs[name][i][1], refs[name][i][2])))
            missed += int((k * k - seen).clip(0).sum())
        rows[str(k)] = summary(samples)
        rows[str(k)]["missed"] = missed
        everything += samples
    rows["all"] = summary(everything)
    return rows


def box_of(pts):
    """Box (x1, y1, x2, y2) from points(): centre +- size / 2."""
    c, s = pts[5], pts[6]
    return np.concatenate([c - s / 2, c + s / 2])


def window(img, x0, y0, w, h):
    """A w x h frame cut from img at (x0, y0), black outside it."""
    out = np.zeros((h, w, 3), np.float32)
    H, W = img.shape[:2]
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = img[sy0:sy1, sx0:sx1]
    return out


def facerelay_letterbox(frame):
    """src/swap/detect.rs: Letterbox::new sizes and fill_letterbox's bilinear resize (aligned
    centres, no antialiasing). Returns the scaled image and the scale (s_x, s_y)."""
    h, w = frame.shape[:2]
    scale = min(SIZE / w, SIZE / h)
    sw = min(max(int(round(w * scale)), 1), SIZE)
    sh = min(max(int(round(h * scale)), 1), SIZE)

    def taps(scaled, src):
        pos = np.clip((np.arange(scaled) + 0.5) * (src / scaled) - 0.5, 0, src - 1)
        i0 = pos.astype(int)
        return i0, np.minimum(i0 + 1, src - 1), pos - i0

    x0, x1, fx = taps(sw, w)
    y0, y1, fy = taps(sh, h)
    fx, fy = fx[None, :, None], fy[:, None, None]
    top = frame[y0][:, x0] * (1 - fx) + frame[y0][:, x1] * fx
    bottom = frame[y1][:, x0] * (1 - fx) + frame[y1][:, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32), (sw / w, sh / h)


def window_origins(lo, hi, n):
    """Window starts covering [lo, hi] (with 64 px to spare) with windows of n px."""
    if hi - lo + 128 <= n:
        return [int(round((lo + hi - n) / 2))]
    step = n // 2
    return list(range(int(lo) - 64, int(hi) + 64 - n + step, step))


def experiment_b(det, photos, refs):
    rows, everything = {}, []
    for k in B_FACTORS:
        samples = []
        w, h = int(round(SIZE * k)), int(round(SIZE * 3 / 4 * k))
        for name in PHOTOS:
            img = photos[name]
            H, W = img.shape[:2]
            boxes = np.array([r[1] for r in refs[name]])
            for gy in window_origins(boxes[:, 1].min(), boxes[:, 3].max(), h):
                for gx in window_origins(boxes[:, 0].min(), boxes[:, 2].max(), w):
                    for jx, jy in B_JITTER:
                        x0, y0 = gx + jx, gy + jy
                        small, (sx, sy) = facerelay_letterbox(window(img, x0, y0, w, h))
                        _, dboxes, dkps = det(canvas_of(small))
                        for box, kp in zip(dboxes, dkps):
                            mapped = {}
                            for conv, c in CONVENTIONS.items():
                                fx = lambda v: to_frame(v, 1 / sx, c) + x0  # noqa: E731
                                fy = lambda v: to_frame(v, 1 / sy, c) + y0  # noqa: E731
                                b = np.array([fx(box[0]), fy(box[1]), fx(box[2]), fy(box[3])])
                                mapped[conv] = points(b, np.stack([fx(kp[:, 0]), fy(kp[:, 1])], -1))
                            bb = box_of(mapped["edge"])
                            # Faces cut by the window's edge (where it is inside the photo) are dropped.
                            cut = [np.inf]
                            if x0 > 0:
                                cut.append(bb[0] - x0)
                            if y0 > 0:
                                cut.append(bb[1] - y0)
                            if x0 + w < W:
                                cut.append(x0 + w - bb[2])
                            if y0 + h < H:
                                cut.append(y0 + h - bb[3])
                            if min(cut) < MARGIN * k:
                                continue
                            i = match(refs[name], bb)
                            if i is None:
                                continue
                            ref = points(refs[name][i][1], refs[name][i][2])
                            samples.append((f"{name}#{i}", 1 / sx, mapped, ref))
        rows[str(k)] = summary(samples)
        everything += samples
    rows["all"] = summary(everything)
    return rows


def mirror_check(det, canvases):
    """c from canvases and their mirror images: x + x' = 640 + 2c."""
    sums, per_face = [], []
    for canvas in canvases:
        s0, b0, k0 = det(canvas)
        if not len(s0):
            continue
        s1, b1, k1 = det(np.ascontiguousarray(canvas[:, ::-1]))
        for box, kp in zip(b0, k0):
            for mbox, mkp in zip(b1, k1):
                back = np.array([SIZE - mbox[2], mbox[1], SIZE - mbox[0], mbox[3]])
                if iou(box, back) < 0.5:
                    continue
                mk = mkp[[1, 0, 2, 4, 3]]  # the mirror swaps the eyes and the mouth corners
                face = np.concatenate([kp[:, 0] + mk[:, 0], [box[0] + mbox[2], box[2] + mbox[0]]])
                sums.extend(face.tolist())
                per_face.append((face[:2].mean() - SIZE) / 2)
    sums = np.array(sums)
    eyes = np.array(per_face)
    return {
        "faces": len(per_face),
        "mean_x_plus_mirror_x": float(sums.mean()),
        "c": float((sums.mean() - SIZE) / 2),
        "c_eyes": float(eyes.mean()),
        "c_eyes_se": float(eyes.std(ddof=1) / np.sqrt(len(eyes))),
    }


def package_pipeline(det, path):
    """The scrfd package's detect(): nearest resize into 640, x_det * det_scale, int()."""
    image = Image.open(path).convert("RGB")
    ratio = image.height / image.width
    if ratio > 1.0:
        nh, nw = SIZE, max(1, int(SIZE / ratio))
    else:
        nw, nh = SIZE, max(1, int(SIZE * ratio))
    det_scale = image.height / nh
    small = np.asarray(image.resize((nw, nh), resample=Image.Resampling.NEAREST), np.float32)
    _, boxes, kps = det(canvas_of(small))
    box, kp = boxes[0] * det_scale, kps[0] * det_scale
    trunc = (tuple(int(v) for v in box), tuple((int(x), int(y)) for x, y in kp))
    return trunc, det_scale


COLUMNS = [("eyes", "eyes"), ("nose", "nose"), ("mouth", "mouth"), ("kps", "all 5"), ("box", "box ctr")]


def error_table(title, rows):
    lines = [title]
    for conv, label in (("edge", "edge-aligned x/s"), ("centre", "centre-aligned (x+0.5)/s-0.5")):
        lines.append(f"  {label}: mean signed error dx, dy and RMS of the 5 keypoints (px)")
        lines.append("  " + f"{'k':>5} {'n':>5}  " + "  ".join(f"{t:>15}" for _, t in COLUMNS) + f"  {'rms':>5}")
        for k, r in rows.items():
            e = r[conv]
            cells = "  ".join(f"{e[g + '_dx']:+7.2f} {e[g + '_dy']:+7.2f}" for g, _ in COLUMNS)
            lines.append("  " + f"{k:>5} {r['samples']:>5}  {cells}  {e['kps_rms']:5.2f}")
    return "\n".join(lines)


def fit_table(title, rows):
    lines = [title, "  " + f"{'k':>5}  {'c (eyes, x+y)':>16}  {'eyes x':>7}  {'eyes y':>7}  {'5 kps x':>7}  {'5 kps y':>7}"]
    for k, r in rows.items():
        c = r.get("c")
        if not c:
            continue
        se = c["eyes"]["se"]
        lines.append("  " + f"{k:>5}  {c['eyes']['c']:+7.3f} +- {se:5.3f}  {c['eyes_x']['c']:+7.3f}  "
                     f"{c['eyes_y']['c']:+7.3f}  {c['kps_x']['c']:+7.3f}  {c['kps_y']['c']:+7.3f}")
        if "eyes_slope" in c:
            lines.append(f"  all k, eyes, from the slope alone (free constant): c = {c['eyes_slope']['c']:+.3f}, "
                         f"constant {c['eyes_slope']['constant']:+.3f} px")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="also write the JSON result here")
    args = ap.parse_args()
    t0 = time.time()
    det = Detector(PACKAGED / "scrfd.onnx")
    photos = {n: np.asarray(Image.open(PACKAGED / "photos" / n).convert("RGB"), np.float32) for n in PHOTOS}
    result = {"score_threshold": SCORE, "nms_threshold": NMS, "conventions_c": CONVENTIONS}

    # Decoder check against the package's truths.
    check = {}
    for name, truth in PACKAGE_TRUTH.items():
        trunc, scale = package_pipeline(det, PACKAGED / "photos" / name)
        check[name] = {"package_k": scale, "reproduced_exactly": trunc == (truth[0], truth[1])}
    result["package_truth_check"] = check

    # References at k = 1, and the crop of each photo around its faces that experiment A shrinks.
    canvases, refs, crops = [], {}, {}
    for name in PHOTOS:
        refs[name] = detect_tiled(det, photos[name], canvases)
        boxes = np.array([r[1] for r in refs[name]])
        H, W = photos[name].shape[:2]
        x0, y0 = int(max(0, boxes[:, 0].min() - 256)), int(max(0, boxes[:, 1].min() - 256))
        x1, y1 = int(min(W, boxes[:, 2].max() + 256)), int(min(H, boxes[:, 3].max() + 256))
        crops[name] = (photos[name][y0:y1, x0:x1], (x0, y0))
    result["reference"] = {
        n: {"faces": len(r), "width_px": [round(float(min(b[2] - b[0] for _, b, _ in r)), 1),
                                          round(float(max(b[2] - b[0] for _, b, _ in r)), 1)]}
        for n, r in refs.items()
    }
    t = time.time()
    result["mirror"] = mirror_check(det, canvases)
    result["seconds_mirror"] = round(time.time() - t, 1)
    t = time.time()
    result["experiment_a"] = experiment_a(det, refs, crops)
    result["seconds_a"] = round(time.time() - t, 1)
    t = time.time()
    result["experiment_b"] = experiment_b(det, photos, refs)
    result["seconds_b"] = round(time.time() - t, 1)
    result["detector_runs"] = det.runs
    result["seconds"] = round(time.time() - t0, 1)

    print("Decoder check, the scrfd package's pipeline against its test truths:")
    for name, c in check.items():
        print(f"  {name}: shrink k = {c['package_k']:.4f}, truth reproduced exactly: {c['reproduced_exactly']}")
    print("References (k = 1, no resampling): " + ", ".join(
        f"{n} {r['faces']} face(s), {r['width_px'][0]}-{r['width_px'][1]} px wide" for n, r in result["reference"].items()))
    m = result["mirror"]
    print(f"Mirror check ({m['faces']} faces): mean x + x' = {m['mean_x_plus_mirror_x']:.3f} "
          f"(edge-aligned: 640, centre-aligned: 639), c = {m['c']:+.3f}; eyes alone "
          f"c = {m['c_eyes']:+.3f} +- {m['c_eyes_se']:.3f}")
    print()
    print(error_table("Experiment A: block-average shrink by k (all k*k phases), mapped minus reference:",
                      result["experiment_a"]))
    print()
    print(error_table("Experiment B: facerelay's letterbox of 4:3 windows (bilinear, aligned centres), "
                      "mapped minus reference:", result["experiment_b"]))
    print()
    print(fit_table("Fitted c (x_frame = (x_det - c) k + c; 0 = edge-aligned x/s, -0.5 = centre-aligned), "
                    "experiment A:", result["experiment_a"]))
    print(fit_table("Experiment B:", result["experiment_b"]))
    print()
    print(f"{det.runs} detector runs, {result['seconds']} s")
    print(json.dumps(result, sort_keys=True))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    sys.exit(main())
