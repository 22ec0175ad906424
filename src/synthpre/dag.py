"""The workflow's rule graph as an SVG, drawn here rather than by Graphviz.

``snakemake --rulegraph`` prints the graph in DOT; Graphviz's ``dot`` is a system package that a
fresh machine or a cluster login node often lacks, and a rule graph of fifteen rules needs no
general graph layout. Layers by longest path from the first rules (so every edge points down),
edges that skip layers routed through placeholders, the order in each layer by the mean position
of its neighbours (a few sweeps down and up), cubic curves for the edges.
"""
from __future__ import annotations

import colorsys
import re
from dataclasses import dataclass
from xml.sax.saxutils import escape

NODE_RE = re.compile(r'^\s*(\w+)\s*\[label\s*=\s*"([^"]*)"(?:.*?color\s*=\s*"([^"]*)")?')
EDGE_RE = re.compile(r"^\s*(\w+)\s*->\s*(\w+)")

LAYER_GAP, NODE_H, GAP, CHAR_W, PAD = 64.0, 26.0, 22.0, 7.2, 16.0


@dataclass
class RuleGraph:
    labels: dict[str, str]          # node id -> rule name
    colors: dict[str, str]          # node id -> stroke colour (#rrggbb)
    edges: list[tuple[str, str]]    # (producer, consumer)


def parse_dot(text: str) -> RuleGraph:
    """Nodes and edges of Snakemake's ``--rulegraph`` DOT (colours given as "h s v")."""
    labels, colors, edges = {}, {}, []
    for line in text.splitlines():
        edge = EDGE_RE.match(line)
        if edge:
            edges.append((edge.group(1), edge.group(2)))
            continue
        node = NODE_RE.match(line)
        if node and node.group(1) not in ("graph", "node", "edge"):
            labels[node.group(1)] = node.group(2)
            colors[node.group(1)] = _hsv_to_hex(node.group(3))
    if not labels:
        raise ValueError("no rules in the DOT input (expected `snakemake --rulegraph` output)")
    unknown = {n for e in edges for n in e} - labels.keys()
    if unknown:
        raise ValueError(f"edges name nodes the DOT input does not define: {sorted(unknown)}")
    return RuleGraph(labels, colors, edges)


def _hsv_to_hex(hsv: str | None) -> str:
    try:
        r, g, b = colorsys.hsv_to_rgb(*(float(x) for x in hsv.split()))
    except (AttributeError, TypeError, ValueError):
        return "#808080"
    return "#{:02x}{:02x}{:02x}".format(*(round(255 * c) for c in (r, g, b)))


def _layers(graph: RuleGraph) -> dict[str, int]:
    """Longest-path layer of each node (producers above consumers), then each node moved down
    to just above its first consumer, so that few edges skip layers."""
    parents: dict[str, list[str]] = {n: [] for n in graph.labels}
    children: dict[str, list[str]] = {n: [] for n in graph.labels}
    for a, b in graph.edges:
        parents[b].append(a)
        children[a].append(b)
    layer: dict[str, int] = {}

    def depth(n: str, path: tuple[str, ...] = ()) -> int:
        if n in path:
            raise ValueError(f"the rule graph has a cycle through {graph.labels[n]}")
        if n not in layer:
            layer[n] = 1 + max((depth(p, path + (n,)) for p in parents[n]), default=-1)
        return layer[n]

    for n in graph.labels:
        depth(n)
    for n in sorted(layer, key=layer.get, reverse=True):  # consumers are placed first
        if children[n]:
            layer[n] = min(layer[c] for c in children[n]) - 1
    return layer


def layout(graph: RuleGraph) -> tuple[dict[str, tuple[float, float, float]], list[list[str]],
                                       float, float]:
    """Positions (centre x, centre y, width) of nodes and edge placeholders, each edge as its
    chain of points, and the drawing's width and height."""
    layer = _layers(graph)
    chains, width = [], {n: len(label) * CHAR_W + 2 * PAD for n, label in graph.labels.items()}
    for k, (a, b) in enumerate(graph.edges):
        chain = [a]
        for level in range(layer[a] + 1, layer[b]):  # a placeholder in every skipped layer
            dummy = f"_e{k}_{level}"
            layer[dummy], width[dummy] = level, 4.0
            chain.append(dummy)
        chains.append(chain + [b])
    rows: list[list[str]] = [[] for _ in range(max(layer.values()) + 1)]
    for n in layer:
        rows[layer[n]].append(n)
    up: dict[str, list[str]] = {n: [] for n in layer}
    down: dict[str, list[str]] = {n: [] for n in layer}
    for chain in chains:
        for a, b in zip(chain, chain[1:]):
            down[a].append(b)
            up[b].append(a)
    for sweep in range(8):  # barycentre ordering, alternately from above and from below
        order = range(1, len(rows)) if sweep % 2 == 0 else range(len(rows) - 2, -1, -1)
        for i in order:
            ref = {n: k for k, n in enumerate(rows[i - 1 if sweep % 2 == 0 else i + 1])}
            near = up if sweep % 2 == 0 else down
            here = {n: k for k, n in enumerate(rows[i])}

            def key(n: str, ref=ref, near=near, here=here) -> float:
                pos = [ref[m] for m in near[n] if m in ref]
                return sum(pos) / len(pos) if pos else here[n]
            rows[i].sort(key=key)
    row_widths = [sum(width[n] for n in row) + GAP * (len(row) - 1) for row in rows]
    total_w = max(row_widths) + 2 * GAP
    pos = {}
    for i, row in enumerate(rows):
        x = (total_w - row_widths[i]) / 2
        for n in row:
            pos[n] = (x + width[n] / 2, GAP + NODE_H / 2 + i * LAYER_GAP, width[n])
            x += width[n] + GAP
    height = 2 * GAP + NODE_H + (len(rows) - 1) * LAYER_GAP
    return pos, chains, total_w, height


def _ports(pos: dict, chains: list[list[str]]) -> list[tuple[tuple[float, float], ...]]:
    """Where each edge leaves its producer and enters its consumer: spread along the box
    edges in the order of the points they come from or go to, so arrows do not pile up."""
    ends = [[(pos[c[0]][0], pos[c[0]][1]), (pos[c[-1]][0], pos[c[-1]][1])] for c in chains]
    for side, (own, other) in enumerate(((0, 1), (-1, -2))):
        by_node: dict[str, list[int]] = {}
        for k, chain in enumerate(chains):
            by_node.setdefault(chain[own], []).append(k)
        for n, ks in by_node.items():
            ks.sort(key=lambda k: pos[chains[k][other]][0])
            x, y, w = pos[n]
            span = 0.6 * w
            for j, k in enumerate(ks):
                offset = span * ((j + 0.5) / len(ks) - 0.5)
                ends[k][side] = (x + offset, y)
    return [tuple(e) for e in ends]


def render_svg(graph: RuleGraph) -> str:
    """A standalone SVG: one rounded box per rule (Snakemake's colours), arrows producer ->
    consumer."""
    pos, chains, w, h = layout(graph)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0f}" height="{h:.0f}" '
           f'viewBox="0 0 {w:.0f} {h:.0f}" font-family="sans-serif" font-size="12">',
           "<title>synthpre rule graph</title>",
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#999"/></marker>'
           "</defs>",
           f'<rect width="{w:.0f}" height="{h:.0f}" fill="white"/>']
    ports = _ports(pos, chains)
    for k, chain in enumerate(chains):
        points = [(pos[n][0], pos[n][1]) for n in chain]
        points[0], points[-1] = ports[k]
        x0, y0 = points[0]
        d = [f"M{x0:.1f},{y0 + NODE_H / 2:.1f}"]
        for j, (x1, y1) in enumerate(points[1:], start=1):
            px, py = points[j - 1]
            py = py + NODE_H / 2 if j == 1 else py
            end = y1 - NODE_H / 2 if j == len(points) - 1 else y1
            mid = (py + end) / 2
            d.append(f"C{px:.1f},{mid:.1f} {x1:.1f},{mid:.1f} {x1:.1f},{end:.1f}")
        out.append(f'<path d="{" ".join(d)}" fill="none" stroke="#999" stroke-width="1.5" '
                   'marker-end="url(#arrow)"/>')
    for n, label in graph.labels.items():
        x, y, bw = pos[n]
        out.append(f'<g><title>rule {escape(label)}</title>'
                   f'<rect x="{x - bw / 2:.1f}" y="{y - NODE_H / 2:.1f}" width="{bw:.1f}" '
                   f'height="{NODE_H:.0f}" rx="6" fill="white" stroke="{graph.colors[n]}" '
                   f'stroke-width="2"/><text x="{x:.1f}" y="{y + 4:.1f}" '
                   f'text-anchor="middle">{escape(label)}</text></g>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
