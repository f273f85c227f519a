#!/usr/bin/env python3
"""Writes the topology of MediaPipe's 468-point face mesh as JSON, from the edge sets in
mediapipe's `face_mesh_connections.py` (read with `ast`; mediapipe is not imported).

    mesh_topology.py face_mesh_connections.py DEST.json

The JSON (sorted keys, compact, so the bytes are the same every run):

- `vertex_count`: 468.
- `triangles`: the faces of the tesselation, each [a, b, c] with a < b < c, sorted. They are the
  triangles whose three edges are all in FACEMESH_TESSELATION, less the few such triangles that
  are not faces (their edges would each border three triangles); every edge then borders at most
  two. Orientation is not consistent.
- `face_oval`, `left_eye`, `right_eye`, `lips_outer`, `lips_inner`, `left_eyebrow`,
  `right_eyebrow`, `nose_outline`: closed loops of vertex indices in walking order (the first
  vertex is not repeated at the end). Each starts at its smallest index and goes on towards the
  smaller of that vertex's two neighbours. "left" is the person's left.
- `nose_ridge`: an open path from the top of the nose bridge (between the eyes) down to the
  vertex below the tip.

FACEMESH_LIPS holds both lip loops: the inner one goes through vertices 13 and 14, the outer one
through 0 and 17. Each FACEMESH_*_EYEBROW holds two open lines (upper and lower edge of the brow);
the loop closes them with the two tesselation edges that join their ends. FACEMESH_NOSE is the
outline of the nose (its longest cycle) plus the ridge.
"""

import ast
import itertools
import json
import sys
from collections import defaultdict

VERTICES = 468


class TopologyError(Exception):
    pass


def read_edge_sets(path):
    """{NAME: [(a, b), ...]} for every `NAME = frozenset([...])` literal, in source order."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    sets = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and getattr(node.value.func, "id", None) == "frozenset"
            and len(node.value.args) == 1
            and isinstance(node.value.args[0], ast.List)
        ):
            sets[node.targets[0].id] = [tuple(ast.literal_eval(e)) for e in node.value.args[0].elts]
    return sets


def adjacency(edges):
    adj = defaultdict(set)
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    return adj


def undirected(edges):
    return {frozenset(e) for e in edges}


def components(edges):
    """The edge sets of the connected components, ordered by smallest vertex."""
    adj = adjacency(edges)
    seen, out = set(), []
    for start in sorted(adj):
        if start in seen:
            continue
        stack, comp = [start], set()
        while stack:
            v = stack.pop()
            if v not in comp:
                comp.add(v)
                stack.extend(adj[v] - comp)
        seen |= comp
        out.append({e for e in undirected(edges) if set(e) <= comp})
    return out


def walk_loop(edges, what):
    adj = adjacency(tuple(e) for e in undirected(edges))
    if any(len(n) != 2 for n in adj.values()):
        raise TopologyError(f"{what}: not a simple closed loop")
    start = min(adj)
    loop, prev, cur = [start], start, min(adj[start])
    while cur != start:
        loop.append(cur)
        prev, cur = cur, next(iter(adj[cur] - {prev}))
    if len(loop) != len(adj):
        raise TopologyError(f"{what}: more than one loop")
    return loop


def walk_path(edges, start, what):
    adj = adjacency(tuple(e) for e in undirected(edges))
    path, prev = [start], None
    while True:
        nxt = adj[path[-1]] - {prev}
        if not nxt:
            break
        if len(nxt) > 1:
            raise TopologyError(f"{what}: branches at {path[-1]}")
        prev = path[-1]
        path.append(nxt.pop())
    if len(path) != len(adj):
        raise TopologyError(f"{what}: not a single path")
    return path


def longest_cycle(edges):
    adj = adjacency(tuple(e) for e in undirected(edges))
    best = []

    def extend(path):
        nonlocal best
        for n in sorted(adj[path[-1]]):
            if n == path[0] and len(path) > 2 and len(path) > len(best):
                best = list(path)
            elif n > path[0] and n not in path:  # each cycle once, from its smallest vertex
                extend(path + [n])

    for v in sorted(adj):
        extend([v])
    return {frozenset(p) for p in zip(best, best[1:] + best[:1])}


def faces(tesselation):
    """(triangles, dropped): the 3-cliques of the edge graph that are faces, and those that are not."""
    edges = undirected(tesselation)
    adj = adjacency(tuple(e) for e in edges)
    cliques = sorted({tuple(sorted((a, b, c))) for a, b in map(tuple, edges) for c in adj[a] & adj[b]})
    use = defaultdict(int)
    for t in cliques:
        for e in itertools.combinations(t, 2):
            use[e] += 1
    # A triangle of edges around other faces (not a face itself) shows as one whose three edges
    # each border three cliques; dropping it leaves each at two.
    dropped = []
    for t in cliques:
        sides = list(itertools.combinations(t, 2))
        if all(use[e] > 2 for e in sides):
            dropped.append(t)
            for e in sides:
                use[e] -= 1
    if any(n > 2 for n in use.values()):
        raise TopologyError("the tesselation is not a triangulated surface (an edge borders 3 faces)")
    kept = [t for t in cliques if t not in dropped]
    return kept, dropped


def eyebrow_loop(brow, tesselation, what):
    """Closes the two open lines of a brow with the tesselation edges that join their ends."""
    parts = components(brow)
    ends = [sorted(v for v, n in adjacency(map(tuple, p)).items() if len(n) == 1) for p in parts]
    if len(parts) != 2 or any(len(e) != 2 for e in ends):
        raise TopologyError(f"{what}: expected two open lines")
    tess = undirected(tesselation)
    joins = [frozenset((a, b)) for a in ends[0] for b in ends[1] if frozenset((a, b)) in tess]
    if len(joins) != 2 or joins[0] & joins[1]:
        raise TopologyError(f"{what}: the ends are not joined by exactly two tesselation edges")
    return walk_loop(undirected(brow) | set(joins), what)


def topology(path):
    sets = read_edge_sets(path)
    tess = sets["FACEMESH_TESSELATION"]
    triangles, dropped = faces(tess)

    lips = {}
    for comp in components(sets["FACEMESH_LIPS"]):
        loop = walk_loop(comp, "lips")
        if {13, 14} <= set(loop):
            lips["lips_inner"] = loop
        elif {0, 17} <= set(loop):
            lips["lips_outer"] = loop
    if len(lips) != 2 or len(components(sets["FACEMESH_LIPS"])) != 2:
        raise TopologyError("FACEMESH_LIPS: expected an outer loop (0, 17) and an inner loop (13, 14)")

    nose = undirected(sets["FACEMESH_NOSE"])
    outline = longest_cycle(nose)
    tips = [v for v, n in adjacency(map(tuple, nose)).items() if len(n) == 1]
    if len(tips) != 1:
        raise TopologyError("FACEMESH_NOSE: expected one open end (the top of the ridge)")

    out = {
        "vertex_count": VERTICES,
        "triangles": [list(t) for t in triangles],
        "face_oval": walk_loop(sets["FACEMESH_FACE_OVAL"], "face oval"),
        "left_eye": walk_loop(sets["FACEMESH_LEFT_EYE"], "left eye"),
        "right_eye": walk_loop(sets["FACEMESH_RIGHT_EYE"], "right eye"),
        "left_eyebrow": eyebrow_loop(sets["FACEMESH_LEFT_EYEBROW"], tess, "left eyebrow"),
        "right_eyebrow": eyebrow_loop(sets["FACEMESH_RIGHT_EYEBROW"], tess, "right eyebrow"),
        "nose_outline": walk_loop(outline, "nose outline"),
        "nose_ridge": walk_path(nose - outline, tips[0], "nose ridge"),
        **lips,
    }
    used = set(itertools.chain(*out["triangles"]))
    if used != set(range(VERTICES)):
        raise TopologyError(f"the triangles do not use exactly the vertices 0..{VERTICES - 1}")
    for key, loop in out.items():
        if key not in ("vertex_count", "triangles") and not set(loop) <= used:
            raise TopologyError(f"{key}: vertex index out of range")
    stats = {"cliques": len(triangles) + len(dropped), "faces": len(triangles), "dropped": dropped}
    return out, stats


def to_json(topo):
    return (json.dumps(topo, sort_keys=True, separators=(",", ":")) + "\n").encode()


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: mesh_topology.py face_mesh_connections.py DEST.json")
    try:
        topo, stats = topology(sys.argv[1])
    except TopologyError as e:
        sys.exit(f"mesh_topology.py: {e}")
    with open(sys.argv[2], "wb") as f:
        f.write(to_json(topo))
    print(
        f"mesh_topology.py: {stats['cliques']} triangles of tesselation edges, "
        f"{len(stats['dropped'])} not faces {stats['dropped']}, {stats['faces']} faces",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
