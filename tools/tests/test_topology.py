"""face_mesh_topology.json: a proper triangulation of the 468-point mesh, and loops that walk
the edge sets of mediapipe's face_mesh_connections.py."""

import itertools
import json
from collections import Counter

import pytest

import mesh_topology


@pytest.fixture(scope="module")
def source(tmp_path_factory, entries):
    import packaged_models

    path = tmp_path_factory.mktemp("mesh") / "face_mesh_connections.py"
    path.write_bytes(packaged_models.member(entries["face_mesh_topology.json"]))
    return mesh_topology.read_edge_sets(path), path


@pytest.fixture(scope="module")
def topo(packaged):
    with open(packaged / "face_mesh_topology.json") as f:
        return json.load(f)


def edges_of(loop, closed=True):
    pairs = zip(loop, loop[1:] + loop[:1]) if closed else zip(loop, loop[1:])
    return {frozenset(p) for p in pairs}


def test_installed_file_is_what_the_tool_writes(source, topo):
    out, stats = mesh_topology.topology(source[1])
    assert out == topo
    assert (stats["cliques"], stats["faces"], stats["dropped"]) == (854, 852, [(49, 64, 129), (279, 294, 358)])


def test_triangles_are_the_faces_of_the_tesselation(source, topo):
    sets, _ = source
    tess = sets["FACEMESH_TESSELATION"]
    # The literal lists its edges face by face, (a, b), (b, c), (c, a): the faces as MediaPipe
    # wrote them, which the triangles found from the edges alone must equal.
    listed = {tuple(sorted(e[0] for e in tess[i : i + 3])) for i in range(0, len(tess), 3)}
    triangles = [tuple(t) for t in topo["triangles"]]
    assert triangles == sorted(set(triangles)) and all(list(t) == sorted(t) for t in triangles)
    assert set(triangles) == listed

    use = Counter(frozenset(e) for t in triangles for e in itertools.combinations(t, 2))
    assert set(use) == {frozenset(e) for e in tess}, "every tesselation edge borders a face"
    assert max(use.values()) == 2
    # A disc with three holes (the eyes and the mouth): V - E + F = 1 - 3.
    assert topo["vertex_count"] - len(use) + len(triangles) == -2
    # Its boundary: the face oval, the two eye openings and the inner lips.
    boundary = {e for e, n in use.items() if n == 1}
    assert boundary == set().union(*(edges_of(topo[k]) for k in ("face_oval", "left_eye", "right_eye", "lips_inner")))


@pytest.mark.parametrize(
    "key, name",
    [("face_oval", "FACEMESH_FACE_OVAL"), ("left_eye", "FACEMESH_LEFT_EYE"), ("right_eye", "FACEMESH_RIGHT_EYE")],
)
def test_loops_walk_their_edge_sets(source, topo, key, name):
    loop = topo[key]
    assert len(set(loop)) == len(loop) and loop[0] == min(loop)
    assert edges_of(loop) == {frozenset(e) for e in source[0][name]}


def test_lips_are_split_into_outer_and_inner(source, topo):
    outer, inner = topo["lips_outer"], topo["lips_inner"]
    assert {0, 17} <= set(outer) and {13, 14} <= set(inner) and not set(outer) & set(inner)
    assert edges_of(outer) | edges_of(inner) == {frozenset(e) for e in source[0]["FACEMESH_LIPS"]}
    assert (len(outer), len(inner)) == (20, 20)


@pytest.mark.parametrize("side", ["left", "right"])
def test_eyebrows_are_closed_by_two_tesselation_edges(source, topo, side):
    sets, _ = source
    brow = {frozenset(e) for e in sets[f"FACEMESH_{side.upper()}_EYEBROW"]}
    loop_edges = edges_of(topo[f"{side}_eyebrow"])
    joins = loop_edges - brow
    assert brow <= loop_edges and len(joins) == 2
    assert joins <= {frozenset(e) for e in sets["FACEMESH_TESSELATION"]}


def test_nose_is_outline_plus_ridge(source, topo):
    nose = {frozenset(e) for e in source[0]["FACEMESH_NOSE"]}
    ridge = topo["nose_ridge"]
    assert ridge[0] == 168 and ridge[-1] == 2 and {4, 1} <= set(ridge)
    assert edges_of(topo["nose_outline"]) | edges_of(ridge, closed=False) == nose
    assert not edges_of(topo["nose_outline"]) & edges_of(ridge, closed=False)
