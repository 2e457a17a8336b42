"""JSON Canvas 1.0 in memory: the file's own dicts, with typed accessors over them.

Every node and edge stays the dict (or whatever value) the file held, in its array, in its
order, so writing the canvas back loses nothing: unknown keys, odd values and malformed
entries go out exactly as they came in. `Node` and `Edge` only read those dicts.

Spec: https://jsoncanvas.org/spec/1.0/ (nodes: text, file, link, group; edges; colours are
a preset "1".."6" or a hex string "#RRGGBB").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fanout.canvas.textmodel import SourceText
from fanout.errors import CanvasWriteError as CanvasWriteError

NODE_TYPES = ("text", "file", "link", "group")
#: the field a node of each type must have besides id, type, x, y, width, height
REQUIRED_BY_TYPE = {"text": "text", "file": "file", "link": "url"}
#: the spec's preset colours
PRESET_COLOURS = {
    "1": "red",
    "2": "orange",
    "3": "yellow",
    "4": "green",
    "5": "cyan",
    "6": "purple",
}
#: the JSON Canvas spec's yellow, the default colour of the learner's nodes
DEFAULT_TARGET_COLOUR = "3"
#: the original Canvas learning system's yellow (its palette differs from the spec's)
ORIGINAL_SYSTEM_YELLOW = "6"

WarningCode = Literal[
    "bad-node", "missing-field", "bad-edge", "dangling-edge", "duplicate-key", "empty-file", "note"
]


@dataclass(frozen=True, slots=True)
class CanvasWarning:
    """Something odd in a canvas that was kept as it is (collected, never printed)."""

    code: WarningCode
    message: str
    node_id: str | None = None
    edge_id: str | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class Rect:
    x: float
    y: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.x + self.width

    @property
    def bottom(self) -> float:
        return self.y + self.height

    @property
    def area(self) -> float:
        return self.width * self.height

    def overlaps(self, other: Rect) -> bool:
        """True if the two share any area (touching edges do not count)."""
        return (
            self.x < other.right
            and other.x < self.right
            and self.y < other.bottom
            and other.y < self.bottom
        )

    def contains(self, other: Rect) -> bool:
        return (
            self.x <= other.x
            and self.y <= other.y
            and other.right <= self.right
            and other.bottom <= self.bottom
        )

    def inflate(self, margin: float) -> Rect:
        return Rect(
            self.x - margin, self.y - margin, self.width + 2 * margin, self.height + 2 * margin
        )


def normalize_colour(colour: object) -> str | None:
    """A colour as the canvas compares it: presets as "1".."6", hex lower-cased."""
    if isinstance(colour, bool) or colour is None:
        return None
    if isinstance(colour, int):
        return str(colour)
    if isinstance(colour, str):
        value = colour.strip()
        return value.lower() if value.startswith("#") else value
    return None


#: coordinates beyond this are treated as missing (no real canvas is that big)
MAX_COORDINATE = 1e12


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int) and abs(value) > MAX_COORDINATE:
        return None
    number = float(value)
    return number if abs(number) <= MAX_COORDINATE else None  # also rejects NaN


def _str(raw: object, key: str) -> str | None:
    if isinstance(raw, dict):
        value = raw.get(key)
        if isinstance(value, str):
            return value
    return None


class Node:
    """One entry of `nodes`; `raw` is the file's own value, read, never rewritten here."""

    __slots__ = ("index", "problems", "raw")

    def __init__(self, raw: Any, index: int) -> None:
        self.raw = raw
        self.index = index
        self.problems: list[str] = _node_problems(raw)

    @property
    def valid(self) -> bool:
        """Has every field the spec requires for its type (only valid nodes become targets)."""
        return not self.problems

    @property
    def id(self) -> str | None:
        return _str(self.raw, "id")

    @property
    def type(self) -> str | None:
        return _str(self.raw, "type")

    @property
    def text(self) -> str | None:
        return _str(self.raw, "text")

    @property
    def file(self) -> str | None:
        return _str(self.raw, "file")

    @property
    def subpath(self) -> str | None:
        return _str(self.raw, "subpath")

    @property
    def url(self) -> str | None:
        return _str(self.raw, "url")

    @property
    def label(self) -> str | None:
        return _str(self.raw, "label")

    @property
    def background(self) -> str | None:
        return _str(self.raw, "background")

    @property
    def background_style(self) -> str | None:
        return _str(self.raw, "backgroundStyle")

    @property
    def color(self) -> str | None:
        """The colour normalized for comparison ("1".."6" or lower-case hex)."""
        return normalize_colour(self.raw.get("color")) if isinstance(self.raw, dict) else None

    @property
    def rect(self) -> Rect | None:
        """The node's rectangle, if x, y, width and height are numbers."""
        if not isinstance(self.raw, dict):
            return None
        values = [_num(self.raw.get(k)) for k in ("x", "y", "width", "height")]
        if any(v is None for v in values):
            return None
        x, y, w, h = (v for v in values if v is not None)
        return Rect(x, y, w, h)

    def __repr__(self) -> str:
        return f"Node({self.id!r}, type={self.type!r}, index={self.index})"


class Edge:
    """One entry of `edges`; `raw` is the file's own value."""

    __slots__ = ("index", "raw")

    def __init__(self, raw: Any, index: int) -> None:
        self.raw = raw
        self.index = index

    @property
    def id(self) -> str | None:
        return _str(self.raw, "id")

    @property
    def from_node(self) -> str | None:
        return _str(self.raw, "fromNode")

    @property
    def to_node(self) -> str | None:
        return _str(self.raw, "toNode")

    @property
    def from_side(self) -> str | None:
        return _str(self.raw, "fromSide")

    @property
    def to_side(self) -> str | None:
        return _str(self.raw, "toSide")

    @property
    def from_end(self) -> str | None:
        return _str(self.raw, "fromEnd")

    @property
    def to_end(self) -> str | None:
        return _str(self.raw, "toEnd")

    @property
    def label(self) -> str | None:
        return _str(self.raw, "label")

    @property
    def color(self) -> str | None:
        return normalize_colour(self.raw.get("color")) if isinstance(self.raw, dict) else None

    def __repr__(self) -> str:
        return f"Edge({self.id!r}, {self.from_node!r} -> {self.to_node!r})"


def _node_problems(raw: object) -> list[str]:
    if not isinstance(raw, dict):
        return [f"is a JSON {type(raw).__name__}, not an object"]
    problems: list[str] = []
    if not isinstance(raw.get("id"), str):
        problems.append("has no string `id`")
    kind = raw.get("type")
    if kind not in NODE_TYPES:
        problems.append(f"has type {kind!r}, not one of {', '.join(NODE_TYPES)}")
    for key in ("x", "y", "width", "height"):
        if _num(raw.get(key)) is None:
            problems.append(f"has no usable number `{key}`")
    needed = REQUIRED_BY_TYPE.get(kind) if isinstance(kind, str) else None
    if needed and not isinstance(raw.get(needed), str):
        problems.append(f"is a {kind} node without `{needed}`")
    return problems


@dataclass(frozen=True, slots=True)
class CanvasStyle:
    """How the file was formatted, so a rewrite stays close to it.

    `source` is the file's own text with the span of each node and edge: a write is then
    edits to that text (see `canvas.textmodel`); `indent` is for a whole rewrite. Copying a
    canvas with its style (as the merge does) keeps the source with it.
    """

    indent: str | None = "\t"
    trailing_newline: bool = True
    source: SourceText | None = field(default=None, compare=False, repr=False)


class Canvas:
    """A parsed canvas: `data` is the top-level object; nodes and edges view into it.

    `Canvas.nodes[i].raw is data["nodes"][i]`: change a node through `data`, and call
    `refresh()` after adding or removing entries.
    """

    def __init__(
        self,
        data: dict[str, Any],
        *,
        path: Path | None = None,
        style: CanvasStyle | None = None,
        warnings: list[CanvasWarning] | None = None,
    ) -> None:
        self.data = data
        self.path = path
        self.style = style or CanvasStyle()
        self.warnings: list[CanvasWarning] = list(warnings or [])
        self.nodes: list[Node] = []
        self.edges: list[Edge] = []
        self._by_id: dict[str, Node] = {}
        self.refresh()

    def refresh(self) -> None:
        raw_nodes = self.data.get("nodes")
        raw_edges = self.data.get("edges")
        self.nodes = [
            Node(n, i) for i, n in enumerate(raw_nodes if isinstance(raw_nodes, list) else [])
        ]
        self.edges = [
            Edge(e, i) for i, e in enumerate(raw_edges if isinstance(raw_edges, list) else [])
        ]
        self._by_id = {}
        for node in self.nodes:
            if node.id is not None:
                self._by_id.setdefault(node.id, node)

    @property
    def title(self) -> str:
        """The canvas's title: its file name without `.canvas`."""
        return self.path.stem if self.path is not None else ""

    def node(self, node_id: str) -> Node | None:
        return self._by_id.get(node_id)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_id

    def valid_edges(self) -> Iterator[Edge]:
        """Edges whose both ends are nodes of this canvas."""
        for edge in self.edges:
            src, dst = edge.from_node, edge.to_node
            if src is not None and dst is not None and src in self._by_id and dst in self._by_id:
                yield edge

    def append_node(self, raw: dict[str, Any]) -> Node:
        nodes = self.data.setdefault("nodes", [])
        nodes.append(raw)
        node = Node(raw, len(nodes) - 1)
        self.nodes.append(node)
        if node.id is not None:
            self._by_id.setdefault(node.id, node)
        return node

    def append_edge(self, raw: dict[str, Any]) -> Edge:
        edges = self.data.setdefault("edges", [])
        edges.append(raw)
        edge = Edge(raw, len(edges) - 1)
        self.edges.append(edge)
        return edge

    def __repr__(self) -> str:
        return f"Canvas({self.title!r}, {len(self.nodes)} nodes, {len(self.edges)} edges)"


def check_structure(canvas: Canvas) -> list[CanvasWarning]:
    """Warnings for malformed nodes and edges (kept as they are, never targets)."""
    found: list[CanvasWarning] = []
    for node in canvas.nodes:
        if node.problems:
            label = node.id if node.id is not None else f"nodes[{node.index}]"
            code: WarningCode = "missing-field" if isinstance(node.raw, dict) else "bad-node"
            what = "; ".join(node.problems)
            found.append(CanvasWarning(code, f"node {label} {what}; kept as it is", node.id))
    for edge in canvas.edges:
        label = edge.id if edge.id is not None else f"edges[{edge.index}]"
        if not isinstance(edge.raw, dict):
            found.append(CanvasWarning("bad-edge", f"edge {label} is not an object; kept", None))
            continue
        missing = [k for k in ("id", "fromNode", "toNode") if not isinstance(edge.raw.get(k), str)]
        if missing:
            text = ", ".join(f"`{k}`" for k in missing)
            found.append(
                CanvasWarning("bad-edge", f"edge {label} has no {text}; kept", None, edge.id)
            )
            continue
        for end in (edge.from_node, edge.to_node):
            if end not in canvas:
                found.append(
                    CanvasWarning(
                        "dangling-edge",
                        f"edge {label} points to node {end}, which does not exist; kept",
                        None,
                        edge.id,
                    )
                )
    return found
