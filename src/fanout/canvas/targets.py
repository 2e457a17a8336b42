"""Which nodes get explained (targets), and what each agent is told about them (context).

A target is a valid text node (or a file node of a Markdown note) picked by id (`ids`: the
colour then plays no part), by colour (default the spec's yellow `"3"`), or inside a group:
`group` alone takes every text node in it, `group` with a colour only that colour's. Groups,
link nodes, other files and legend swatches (small coloured nodes holding just a colour name
or a short label) are never targets; empty nodes and placeholders such as `[请在此填写你的理解]`
are skipped too. Every candidate that is not a target is in `Selection.skipped` with why, and
`Selection.how` says in words how the targets were chosen.

Context, following the learning canvases' shape
material → question → learner's explanation:

- questions: the nodes with an edge into the target (one hop);
- materials: the nodes with an edge into those (two hops);
- a file node counts with its note's text, read from the vault;
- the label of the innermost group whose rectangle holds the target; the canvas's title.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fanout.canvas.model import (
    DEFAULT_TARGET_COLOUR,
    Canvas,
    CanvasWarning,
    Edge,
    Node,
    Rect,
    normalize_colour,
)
from fanout.canvas.naming import DEFAULT_NAMESPACE, is_our_id
from fanout.canvas.vault import find_vault_root, read_note
from fanout.errors import InputError

#: texts that stand for "not filled in yet" (regular expressions, whole text, any case)
DEFAULT_PLACEHOLDERS: tuple[str, ...] = (
    r"[\[【［(（]\s*请[^\]】］)）]{0,40}(填写|输入|写下|补充|作答)[^\]】］)）]{0,40}[\]】］)）]",
    r"请(在此|在这里|在这)?(填写|输入|写下)[^：:。，,.!?！？\n]{0,30}",
    r"(待填写|待补充|未作答|TODO|TBD|\.{3,}|…+|-+|_+)",
    r"[\[(]\s*(your (answer|understanding|explanation) here|fill in[^\])]*)\s*[\])]",
)
#: characters of a file node's note taken into a context (None: all of it)
DEFAULT_NOTE_CHARS: int | None = 8000
#: words in an edge label that mark the learner's own explanation (for the colour hint)
_LEARNER_WORDS = ("理解", "解释", "回答", "作答", "understand", "explanation", "answer")


@dataclass(frozen=True, slots=True)
class ContextNode:
    """A node near a target: `text` is its text, note text, URL or group label."""

    node_id: str
    type: str
    text: str
    edge_label: str | None = None
    file: str | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """A node to explain, with everything an agent is told about it."""

    node_id: str
    #: the learner's text (for a file node: its note's text)
    text: str
    colour: str | None
    rect: Rect
    canvas_title: str
    group_label: str | None = None
    #: nodes with an edge into the target (what it answers)
    questions: tuple[ContextNode, ...] = ()
    #: nodes with an edge into a question (what the question comes from)
    materials: tuple[ContextNode, ...] = ()

    @property
    def question(self) -> str:
        return "\n\n".join(q.text for q in self.questions if q.text.strip())

    @property
    def context(self) -> str:
        """The canvas title, group label and material as one block of text for a prompt."""
        parts = [f"Canvas: {self.canvas_title}"] if self.canvas_title else []
        if self.group_label:
            parts.append(f"Group: {self.group_label}")
        for item in self.materials:
            head = "Material"
            if item.file:
                head = f"Note {item.file}"
            elif item.type == "link":
                head = "Link"
            if item.edge_label:
                head += f' (edge "{item.edge_label}")'
            parts.append(f"{head}:\n{item.text}")
        return "\n\n".join(parts)

    def inputs(self) -> dict[str, str]:
        """The Canvas blueprints' inputs: question, learner_text, topic, context.

        With no node pointing at the target, the question is the group's label, else the
        target's own text.
        """
        return {
            "question": self.question or self.group_label or self.text,
            "learner_text": self.text,
            "topic": self.canvas_title,
            "context": self.context,
        }


@dataclass(frozen=True, slots=True)
class Skipped:
    node_id: str | None
    reason: str

    def __str__(self) -> str:
        return f"{self.node_id}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ColourHint:
    """Another colour that looks like the learner's nodes when the chosen one has none."""

    colour: str
    count: int
    message: str


@dataclass(slots=True)
class Selection:
    """What `find_targets` found: targets in canvas order, the skipped nodes, warnings."""

    targets: list[Target] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[CanvasWarning] = field(default_factory=list)
    hint: ColourHint | None = None
    #: how the targets were chosen, in words (`colour "3"`, `ids a, b`, ...)
    how: str = ""

    def empty_reason(self) -> str:
        """Why there is no target, in one line (for the error that stops a run)."""
        if self.skipped:
            shown = "; ".join(str(s) for s in self.skipped[:3])
            more = f"; and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
            return f"no target by {self.how}: {shown}{more}"
        hint = f" ({self.hint.message})" if self.hint else ""
        return f"no target by {self.how}: no node matches{hint}"

    def __iter__(self) -> Iterator[Target]:
        return iter(self.targets)

    def __len__(self) -> int:
        return len(self.targets)


def is_placeholder(text: str, patterns: Sequence[str] = DEFAULT_PLACEHOLDERS) -> bool:
    """True if the whole (stripped) text matches one of the placeholder patterns."""
    stripped = text.strip()
    return any(re.fullmatch(p, stripped, re.IGNORECASE | re.DOTALL) for p in patterns)


def find_targets(
    canvas: Canvas,
    *,
    colour: str | None = DEFAULT_TARGET_COLOUR,
    ids: Sequence[str] | None = None,
    group: str | None = None,
    placeholders: Sequence[str] = DEFAULT_PLACEHOLDERS,
    namespace: str = DEFAULT_NAMESPACE,
    vault_root: Path | None = None,
    note_chars: int | None = DEFAULT_NOTE_CHARS,
) -> Selection:
    """Targets by `ids` (colour then ignored) or by `colour` (None: any), within `group`.

    `group` is a group node's label or id; with `colour=None` every text node inside it is
    a candidate. Unknown ids or groups are an `InputError`.
    """
    want = normalize_colour(colour)
    root = vault_root or (find_vault_root(canvas.path) if canvas.path else Path.cwd())
    sel = Selection(warnings=list(canvas.warnings), how=describe_choice(want, ids, group))
    groups = _groups(canvas)
    candidates = _candidates(canvas, ids, want)
    if group is not None:
        chosen = [g for g in groups if g.label == group or g.id == group]
        if not chosen:
            labels = ", ".join(sorted({g.label or g.id or "?" for g in groups})) or "none"
            raise InputError(f"{_name(canvas)}: no group {group!r} (groups: {labels})")
        boxes = [g.rect for g in chosen if g.rect is not None]
        chosen_ids = {g.id for g in chosen}
        candidates = [n for n in candidates if n.id not in chosen_ids and _inside_any(n, boxes)]
    incoming = _incoming(canvas)
    typical = _typical_area(canvas)
    for node in candidates:
        reason = _unusable(node, namespace)
        if reason is None and ids is None and _is_legend_swatch(node, typical, incoming, canvas):
            reason = "a legend swatch (a small node naming a colour or a label), not an answer"
        if reason:
            sel.skipped.append(Skipped(node.id, reason))
            continue
        if node.id is None or node.rect is None:  # cannot happen for a valid node
            continue
        text = node.text or ""
        if node.type == "file":
            note = read_note(root, node.file or "", node.subpath)
            if note is None:
                sel.skipped.append(Skipped(node.id, f"its note {node.file!r} is not in the vault"))
                continue
            if not (node.file or "").lower().endswith(".md"):
                sel.skipped.append(Skipped(node.id, f"a file {node.file!r}, not a Markdown note"))
                continue
            text = note
        if not text.strip():
            sel.skipped.append(Skipped(node.id, "empty: nothing to explain yet"))
            continue
        if is_placeholder(text, placeholders):
            sel.skipped.append(Skipped(node.id, f"placeholder text {text.strip()!r}"))
            continue
        questions, materials = _context(canvas, node.id, incoming, root, namespace, note_chars)
        sel.targets.append(
            Target(
                node_id=node.id,
                text=text,
                colour=node.color,
                rect=node.rect,
                canvas_title=canvas.title,
                group_label=_innermost_group(node.rect, groups),
                questions=questions,
                materials=materials,
            )
        )
    if ids is None and want is not None:
        sel.hint = colour_hint(canvas, want, placeholders=placeholders, namespace=namespace)
    return sel


def describe_choice(colour: str | None, ids: Sequence[str] | None, group: str | None) -> str:
    """How targets are chosen, in words: the header of `canvas plan` and `canvas run`."""
    if ids is not None:
        return "ids " + ", ".join(ids) + " (colour not used)"
    where = f" in group {group!r}" if group is not None else ""
    if colour is None:
        return f"every text node{where}" if group is not None else "any colour"
    return f'colour "{colour}"{where}'


def colour_hint(
    canvas: Canvas,
    colour: str | None,
    *,
    placeholders: Sequence[str] = DEFAULT_PLACEHOLDERS,
    namespace: str = DEFAULT_NAMESPACE,
) -> ColourHint | None:
    """If no node has `colour`, the colour whose nodes look most like learner explanations.

    A node looks like one when an edge into it is labelled like "个人理解", when it holds a
    placeholder, or when a text node points at it and it points at nothing.
    """
    want = normalize_colour(colour)
    if any(n.valid and n.color == want for n in canvas.nodes):
        return None
    into: dict[str, list[Edge]] = defaultdict(list)
    out: set[str] = set()
    for edge in canvas.valid_edges():
        into[edge.to_node or ""].append(edge)
        if not is_our_id(edge.to_node, namespace):  # our notes hang off learner nodes
            out.add(edge.from_node or "")
    looks = Counter[str]()
    for node in canvas.nodes:
        if not node.valid or node.type != "text" or node.color in (None, want):
            continue
        if is_our_id(node.id, namespace):
            continue
        labels = [(e.label or "").casefold() for e in into.get(node.id or "", [])]
        from_text = any(
            _is_text(canvas.node(e.from_node or "")) for e in into.get(node.id or "", [])
        )
        if (
            any(word in label for label in labels for word in _LEARNER_WORDS)
            or is_placeholder(node.text or "", placeholders)
            or (from_text and node.id not in out)
        ):
            looks[node.color or ""] += 1
    if not looks:
        return None
    best, count = sorted(looks.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    message = (
        f'no node has colour "{want}"; {count} node(s) with colour "{best}" look like the '
        f'learner\'s own explanations: choose colour "{best}" to explain them'
    )
    return ColourHint(best, count, message)


def _name(canvas: Canvas) -> str:
    return str(canvas.path) if canvas.path else "<canvas>"


def _is_text(node: Node | None) -> bool:
    return node is not None and node.valid and node.type in ("text", "file")


def _candidates(canvas: Canvas, ids: Sequence[str] | None, want: str | None) -> list[Node]:
    if ids is None:
        return [n for n in canvas.nodes if want is None or n.color == want]
    unknown = [i for i in ids if i not in canvas]
    if unknown:
        raise InputError(f"{_name(canvas)}: no node with id {', '.join(map(repr, unknown))}")
    wanted = set(ids)
    return [n for n in canvas.nodes if n.id in wanted]


def _unusable(node: Node, namespace: str) -> str | None:
    if not node.valid:
        return "malformed node (" + "; ".join(node.problems) + ")"
    if node.type == "group":
        return "a group, not a note: target the nodes inside it with --group"
    if node.type == "link":
        return "a link node (a web page): nothing of the learner's to explain"
    if is_our_id(node.id, namespace):
        return "a note fanout wrote"
    return None


#: colour names a legend swatch holds (en, zh, ja, de, it, fr, es); compared case-folded
_COLOUR_WORDS = (
    "red orange yellow green cyan blue purple violet pink grey gray "
    "红 红色 橙 橙色 黄 黄色 绿 绿色 青 青色 蓝 蓝色 紫 紫色 粉 粉色 灰 灰色 "
    "赤 赤色 緑 緑色 水色 "
    "rot gelb grün blau lila violett rosa grau "
    "rosso arancione giallo verde azzurro blu viola "
    "rouge jaune vert bleu "
    "rojo naranja amarillo verde azul morado"
)
_COLOUR_NAMES = frozenset(_COLOUR_WORDS.split())
_LEGEND_WORDS = ("legend", "图例", "圖例", "凡例", "legende", "legenda", "légende", "leyenda")
_LABEL_SPLIT = re.compile(r"\s*[:：=＝\-–—→>]\s*")
#: a legend label is one short line (characters)
_LABEL_CHARS = 20


def _typical_area(canvas: Canvas) -> float | None:
    """The median area of the canvas's text nodes (None with fewer than three)."""
    areas = sorted(
        r.area for n in canvas.nodes if n.valid and n.type == "text" and (r := n.rect) is not None
    )
    return areas[len(areas) // 2] if len(areas) >= 3 else None


def _is_legend_swatch(
    node: Node, typical: float | None, incoming: dict[str, list[Edge]], canvas: Canvas
) -> bool:
    """A text node that explains the canvas's colours rather than answering anything.

    It holds one short line, and either that line names a colour (`黄色`, `yellow: my
    answer`) or says legend, or the node is tiny (at most a quarter of the canvas's median
    text node) with no edge at all. A learner's answer is never just a colour's name, and
    a tiny node nothing connects to is a label, not an explanation.
    """
    if node.type != "text":
        return False
    text = (node.text or "").strip()
    if not text or "\n" in text or len(text) > _LABEL_CHARS:
        return False
    head = _LABEL_SPLIT.split(text, maxsplit=1)[0].strip().casefold()
    if head in _COLOUR_NAMES or any(w in text.casefold() for w in _LEGEND_WORDS):
        return True
    rect = node.rect
    if typical is None or rect is None or rect.area > typical / 4:
        return False
    node_id = node.id or ""
    touched = bool(incoming.get(node_id)) or any(
        e.from_node == node_id for e in canvas.valid_edges()
    )
    return not touched


def _groups(canvas: Canvas) -> list[Node]:
    return [n for n in canvas.nodes if n.valid and n.type == "group"]


def _inside_any(node: Node, boxes: list[Rect]) -> bool:
    rect = node.rect
    return rect is not None and node.type != "group" and any(b.contains(rect) for b in boxes)


def _innermost_group(rect: Rect, groups: list[Node]) -> str | None:
    best: tuple[float, int, Node] | None = None
    for group in groups:
        box = group.rect
        if box is None or not box.contains(rect):
            continue
        key = (box.area, -group.index, group)
        if best is None or key[:2] < best[:2]:
            best = key
    return best[2].label if best else None


def _incoming(canvas: Canvas) -> dict[str, list[Edge]]:
    into: dict[str, list[Edge]] = defaultdict(list)
    for edge in canvas.valid_edges():
        into[edge.to_node or ""].append(edge)
    return into


def _context(
    canvas: Canvas,
    target_id: str,
    incoming: dict[str, list[Edge]],
    root: Path,
    namespace: str,
    note_chars: int | None,
) -> tuple[tuple[ContextNode, ...], tuple[ContextNode, ...]]:
    seen = {target_id}
    questions: list[ContextNode] = []
    for edge in incoming.get(target_id, []):
        item = _context_node(canvas, edge, seen, root, namespace, note_chars)
        if item is not None:
            questions.append(item)
    materials: list[ContextNode] = []
    for question in questions:
        for edge in incoming.get(question.node_id, []):
            item = _context_node(canvas, edge, seen, root, namespace, note_chars)
            if item is not None:
                materials.append(item)
    return tuple(questions), tuple(materials)


def _context_node(
    canvas: Canvas,
    edge: Edge,
    seen: set[str],
    root: Path,
    namespace: str,
    note_chars: int | None,
) -> ContextNode | None:
    node = canvas.node(edge.from_node or "")
    if node is None or not node.valid or node.id is None or node.id in seen:
        return None
    if is_our_id(node.id, namespace):
        return None
    seen.add(node.id)
    kind = node.type or ""
    file = None
    if kind == "text":
        text = node.text or ""
    elif kind == "file":
        file = node.file or ""
        note = read_note(root, file, node.subpath) if file.lower().endswith(".md") else None
        if note is None:
            text = f"[file {file}]"
        elif note_chars is not None and len(note) > note_chars:
            text = note[:note_chars] + f"\n[… {len(note) - note_chars} more characters]"
        else:
            text = note
    elif kind == "link":
        text = node.url or ""
    else:
        text = node.label or ""
    return ContextNode(node.id, kind, text, edge.label, file)
