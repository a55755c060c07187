"""A journey drawn as a picture: a layered layout of its steps as SVG, and PNG through
vl-convert (a dependency of ceap already, for the report figures; no Graphviz, no
browser). Forward moves go down, one row per layer; moves back up a cycle curve round the
right side."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any
from xml.sax.saxutils import escape

from ceap.durations import format_duration
from ceap.errors import CeapError
from ceap.journeys.plot import label
from ceap.spec.journey import END, Journey

FONT = "Liberation Sans, DejaVu Sans, Arial, sans-serif"
SIZE = 13  # px, the labels' font size
CHAR = 0.6 * SIZE  # a wide estimate of one character's width (no font metrics at hand)
ROW_GAP, COL_GAP, MARGIN = 56, 28, 24
MAX_LABEL = 56  # characters of a step's label before "..."
#: fill and stroke per step kind
COLORS = {"send": ("#e8f0fe", "#1a56c4"), "wait_for": ("#fff4e0", "#b8670a"),
          "branch": ("#f3e8fd", "#7b2cbf"), "exit": ("#fde8e8", "#b42318"),
          "enter": ("#e7f6ec", "#1e7b3a"), "end": ("#eeeeee", "#444444"), "dummy": ("none", "none")}


@dataclass
class _Node:
    id: str
    kind: str
    lines: list[str]
    w: float = 0.0
    h: float = 0.0
    x: float = 0.0  # centre
    y: float = 0.0  # top
    rank: int = 0
    order: float = 0.0


@dataclass
class _Edge:
    source: str
    target: str
    name: str
    back: bool = False
    chain: list[str] = field(default_factory=list)  # the dummy nodes a long edge passes


def _short(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 3] + "..."


def _nodes(journey: Journey, action: Any) -> dict[str, _Node]:
    nodes = {"enter": _Node("enter", "enter", ["enter"])}
    for step in journey.steps:
        nodes[step.id] = _Node(step.id, step.kind, [step.id, _short(label(step, action))])
    nodes[END] = _Node(END, "end", ["end"])
    for node in nodes.values():
        if node.kind in ("enter", "end"):
            node.w = node.h = 46.0
        else:
            node.w = max(len(t) for t in node.lines) * CHAR + (56 if node.kind == "branch" else 28)
            node.h = 46.0
    return nodes


def _edges(journey: Journey) -> list[_Edge]:
    """The moves, one edge per pair of steps (``opened, timeout`` when both go one way)."""
    edges = [_Edge("enter", journey.first, "")]
    for step_id, targets in journey.edges().items():
        merged: dict[str, list[str]] = {}
        for name, target in targets:
            merged.setdefault(target, []).append(name)
        edges.extend(_Edge(step_id, target, ", ".join(n for n in names if n))
                     for target, names in merged.items())
    return edges


def _rank(nodes: dict[str, _Node], edges: list[_Edge]) -> None:
    """Mark the edges that go back up a cycle (depth first from ``enter``), then give each
    node the longest forward path to it; ``end`` goes below every step."""
    out: dict[str, list[_Edge]] = {n: [] for n in nodes}
    for e in edges:
        out[e.source].append(e)
    state: dict[str, int] = {}
    post: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        for e in out[node]:
            if state.get(e.target) == 1:
                e.back = True
            elif e.target not in state:
                visit(e.target)
        state[node] = 2
        post.append(node)

    visit("enter")
    for node in nodes:  # unreachable steps (a valid journey has none)
        if node not in state:
            visit(node)
    for node in reversed(post):  # a topological order of the forward edges
        for e in out[node]:
            if not e.back and e.target != END:
                nodes[e.target].rank = max(nodes[e.target].rank, nodes[node].rank + 1)
    nodes[END].rank = max(n.rank for k, n in nodes.items() if k != END) + 1
    for order, node in enumerate(reversed(post)):
        nodes[node].order = order


def _split_long_edges(nodes: dict[str, _Node], edges: list[_Edge]) -> None:
    """A forward edge over several rows passes a small invisible node in each row between."""
    for i, e in enumerate(edges):
        if e.back:
            continue
        start, stop = nodes[e.source], nodes[e.target]
        for rank in range(start.rank + 1, stop.rank):
            dummy = _Node(f"_d{i}_{rank}", "dummy", [], w=8.0, h=46.0, rank=rank, order=start.order)
            nodes[dummy.id] = dummy
            e.chain.append(dummy.id)


def _layout(nodes: dict[str, _Node], edges: list[_Edge]) -> list[list[_Node]]:
    rows: list[list[_Node]] = [[] for _ in range(max(n.rank for n in nodes.values()) + 1)]
    for node in nodes.values():
        rows[node.rank].append(node)
    links: list[tuple[str, str]] = []  # consecutive rows only
    for e in edges:
        if not e.back:
            path = [e.source, *e.chain, e.target]
            links.extend(pairwise(path))
    ups = {n: [a for a, b in links if b == n] for n in nodes}
    downs = {n: [b for a, b in links if a == n] for n in nodes}
    for row in rows:
        row.sort(key=lambda n: n.order)
    for sweep in range(6):  # barycentres, down then up
        down = sweep % 2 == 0
        for row in rows[1:] if down else reversed(rows[:-1]):
            for i, node in enumerate(row):
                near = ups[node.id] if down else downs[node.id]
                node.order = (sum(_index(rows, nodes[m]) for m in near) / len(near)) if near else i
            row.sort(key=lambda n: n.order)
    for row in rows:  # x: packed left to right, then each row centred under its parents
        x = 0.0
        for node in row:
            node.x = x + node.w / 2
            x += node.w + COL_GAP
    for _ in range(4):
        for row in rows[1:]:
            want = [sum(nodes[m].x for m in ups[n.id]) / len(ups[n.id]) if ups[n.id] else n.x for n in row]
            _place(row, want)
    left = min(n.x - n.w / 2 for n in nodes.values())
    y = float(MARGIN + 34)  # below the title
    for row in rows:
        for node in row:
            node.x += MARGIN - left
            node.y = y
        y += max(n.h for n in row) + ROW_GAP
    return rows


def _index(rows: list[list[_Node]], node: _Node) -> int:
    return next(i for i, n in enumerate(rows[node.rank]) if n is node)


def _place(row: list[_Node], want: list[float]) -> None:
    """Put the row's nodes near ``want`` in their order, at least COL_GAP apart."""
    xs: list[float] = []
    for node, x in zip(row, want, strict=True):
        if xs:
            prev = row[len(xs) - 1]
            x = max(x, xs[-1] + prev.w / 2 + COL_GAP + node.w / 2)
        xs.append(x)
    shift = sum(w - x for w, x in zip(want, xs, strict=True)) / len(xs)
    for node, x in zip(row, xs, strict=True):
        node.x = x + shift


def _shape(node: _Node) -> str:
    fill, stroke = COLORS[node.kind]
    x0, y0, w, h = node.x - node.w / 2, node.y, node.w, node.h
    style = f'fill="{fill}" stroke="{stroke}" stroke-width="1.6"'
    if node.kind in ("enter", "end"):
        r = w / 2
        ring = (f'<circle cx="{node.x:.1f}" cy="{y0 + r:.1f}" r="{r - 4:.1f}" fill="none" stroke="{stroke}" '
                'stroke-width="1.2"/>') if node.kind == "end" else ""
        return f'<circle cx="{node.x:.1f}" cy="{y0 + r:.1f}" r="{r:.1f}" {style}/>{ring}'
    if node.kind == "send":
        return f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{w:.1f}" height="{h:.1f}" rx="3" {style}/>'
    if node.kind == "wait_for":
        return f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{w:.1f}" height="{h:.1f}" rx="{h / 2:.1f}" {style}/>'
    cut = 14.0 if node.kind == "branch" else 8.0  # a hexagon for a branch, an octagon-ish exit
    points = [(x0, y0 + h / 2), (x0 + cut, y0), (x0 + w - cut, y0), (x0 + w, y0 + h / 2),
              (x0 + w - cut, y0 + h), (x0 + cut, y0 + h)]
    return f'<polygon points="{" ".join(f"{px:.1f},{py:.1f}" for px, py in points)}" {style}/>'


def _text(node: _Node) -> str:
    if node.kind == "dummy":
        return ""
    cy = node.y + node.h / 2
    if len(node.lines) == 1:
        return (f'<text x="{node.x:.1f}" y="{cy + 4.5:.1f}" text-anchor="middle">'
                f"{escape(node.lines[0])}</text>")
    first, second = node.lines
    return (f'<text x="{node.x:.1f}" y="{cy - 4:.1f}" text-anchor="middle" font-weight="bold">'
            f'{escape(first)}</text><text x="{node.x:.1f}" y="{cy + 13:.1f}" text-anchor="middle" '
            f'fill="#333333">{escape(second)}</text>')


def _tag(x: float, y: float, name: str) -> str:
    w = len(name) * CHAR * 0.9 + 8
    return (f'<rect x="{x - w / 2:.1f}" y="{y - 9:.1f}" width="{w:.1f}" height="15" fill="white" '
            f'fill-opacity="0.9"/><text x="{x:.1f}" y="{y + 2.5:.1f}" text-anchor="middle" '
            f'font-size="{SIZE - 2}" fill="#555555">{escape(name)}</text>')


def svg(journey: Journey, action: Any = None, title: str | None = None) -> str:
    """The journey as an SVG document."""
    nodes = _nodes(journey, action)
    edges = _edges(journey)
    _rank(nodes, edges)
    _split_long_edges(nodes, edges)
    _layout(nodes, edges)
    right = max(n.x + n.w / 2 for n in nodes.values())
    parts: list[str] = []
    tags: list[str] = []
    backs = 0
    for e in edges:
        a, b = nodes[e.source], nodes[e.target]
        if e.back:  # down into the gap, round the right of everything, into the target's top
            backs += 1
            out = right + 30.0 * backs
            below, above = a.y + a.h + ROW_GAP * 0.35, b.y - ROW_GAP * 0.35
            bx = b.x + min(b.w / 4, 24.0)
            route = [(a.x + 10, a.y + a.h), (a.x + 10, below), (out, below), (out, above), (bx, above),
                     (bx, b.y - 2)]
            line = " ".join(f"{x:.1f},{y:.1f}" for x, y in route)
            parts.append(f'<polyline points="{line}" fill="none" stroke="#777777" stroke-width="1.4" '
                         'stroke-dasharray="5,3" stroke-linejoin="round" marker-end="url(#arrow)"/>')
            if e.name:
                tags.append(_tag(out, (below + above) / 2, e.name))
            continue
        points = [(a.x, a.y + a.h)]
        points += [(nodes[d].x, nodes[d].y + nodes[d].h / 2) for d in e.chain]
        points.append((b.x, b.y - 2))
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(f'<polyline points="{line}" fill="none" stroke="#555555" stroke-width="1.4" '
                     'marker-end="url(#arrow)"/>')
        if e.name:
            (x1, y1), (x2, y2) = points[0], points[1]
            tags.append(_tag(x1 + (x2 - x1) * 0.45, y1 + (y2 - y1) * 0.45, e.name))
    for node in nodes.values():
        if node.kind != "dummy":
            parts.append(_shape(node) + _text(node))
    notes = []
    if journey.exit_on:
        notes.append(f"any step: exit on {', '.join(journey.exit_on)}")
    again = journey.reentry
    notes.append(f"re-entry: {again if isinstance(again, str) else 'after ' + format_duration(again)}")
    bottom = max(n.y + n.h for n in nodes.values()) + 24
    for i, note in enumerate(notes):
        parts.append(f'<text x="{MARGIN}" y="{bottom + 18 * i:.1f}" fill="#b42318">{escape(note)}</text>')
    width = max(right + 30.0 * backs + 40, MARGIN * 2 + max(len(t) for t in notes) * CHAR,
                MARGIN * 2 + len(title or "") * CHAR * 1.2)
    height = bottom + 18 * len(notes) + MARGIN
    head = (f'<text x="{MARGIN}" y="{MARGIN + 8}" font-size="{SIZE + 3}" font-weight="bold">'
            f"{escape(title)}</text>") if title else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="{FONT}" font-size="{SIZE}">'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555555"/>'
            f'</marker></defs><rect width="100%" height="100%" fill="white"/>{head}'
            + "".join(parts) + "".join(tags) + "</svg>\n")


def png(journey: Journey, action: Any = None, title: str | None = None) -> bytes:
    """The journey as a PNG image (twice the SVG's size, for sharp text)."""
    try:
        import vl_convert
    except ImportError:
        raise CeapError("--format png needs the vl-convert-python package (a dependency of ceap, "
                        "missing here): pip install 'vl-convert-python>=1.6,<2'") from None
    return bytes(vl_convert.svg_to_png(svg(journey, action, title), scale=2))


__all__ = ["png", "svg"]
