"""Our additions onto a canvas, as a pure plan: which note, which node, which edge, where.

`merge_results` takes a canvas as it is on disk now and the results to write, and returns a
copy of it with, per (target, agent): a file node (id `node_id_for(target, agent)`) and an
edge target → node labelled with the agent. A node or edge with our id that is already
there is kept as it is (the learner may have moved or recoloured it): that is what makes a
rerun add nothing. Nothing else in the canvas changes, except the optional recolouring of
the question nodes of a scored target. It reads the notes folder (to reuse a note a killed
run left behind) but writes nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from fanout.canvas.layout import DEFAULT_GAP, Layout, Placement
from fanout.canvas.model import Canvas, CanvasWriteError, Edge, Node, Rect, normalize_colour
from fanout.canvas.naming import (
    DEFAULT_NAMESPACE,
    edge_id_for,
    folder_component,
    is_our_id,
    node_id_for,
    note_file_name,
    short_id_for,
)
from fanout.canvas.safefile import DEFAULT_KEEP_BACKUPS, DEFAULT_LOCK_TIMEOUT_S
from fanout.canvas.vault import is_inside, resolve_in_vault, vault_path
from fanout.errors import ConfigError

#: the colour of the file nodes we add (the spec's cyan; the original system's AI output)
DEFAULT_NOTE_COLOUR = "5"
#: verdict -> colour for recolouring question nodes, in the original system's palette
ORIGINAL_VERDICT_COLOURS: Mapping[str, str] = {
    "not_understood": "1",
    "partial": "3",
    "mastered": "2",
}
#: the same in the JSON Canvas spec's palette (red, yellow... : 1 red, 2 orange, 4 green)
SPEC_VERDICT_COLOURS: Mapping[str, str] = {"not_understood": "1", "partial": "2", "mastered": "4"}


@dataclass(frozen=True, slots=True)
class NoteResult:
    """One agent's answer for one target: written as a note, a file node and an edge."""

    target_id: str
    agent: str
    text: str
    #: a heading for the note (`# title` above the text), if any
    title: str | None = None
    #: a scoring verdict (e.g. "partial"); recolours the target's questions if enabled
    verdict: str | None = None


@dataclass(frozen=True, slots=True)
class Reservation:
    """Where every note of a run goes, planned from the canvas before the first write.

    A run writes each target's notes as its answers come in; planning all places first
    makes the layout depend on the canvas and the plan only, never on the order answers
    arrive. `slots[target]` are the target's places in stack order: a write gives the
    k-th result of a target (in the order given) the k-th slot. `rank` orders our new
    nodes and edges in the file (by target, then slot), so the bytes do not depend on
    the order of writes either.
    """

    slots: Mapping[str, tuple[Placement, ...]]
    rank: Mapping[Rect, tuple[int, int]]


def reserve_places(
    canvas: Canvas,
    counts: Sequence[tuple[str, int]],
    *,
    node_size: tuple[int, int] | None = None,
    gap: int = DEFAULT_GAP,
) -> Reservation:
    """Places for `count` notes of each `(target id, count)`, in that order (targets with
    no position are left out). Nodes already on the canvas, ours included, are avoided."""
    layout = _layout_of(canvas, gap)
    size = (float(node_size[0]), float(node_size[1])) if node_size else None
    slots: dict[str, tuple[Placement, ...]] = {}
    rank: dict[Rect, tuple[int, int]] = {}
    for index, (target_id, count) in enumerate(counts):
        node = canvas.node(target_id)
        if node is None or node.rect is None or count < 1 or target_id in slots:
            continue
        slots[target_id] = tuple(layout.place(node.rect, count, size))
        for k, spot in enumerate(slots[target_id]):
            rank[spot.rect] = (index, k)
    return Reservation(slots, rank)


def _layout_of(canvas: Canvas, gap: int) -> Layout:
    nodes = [r for n in canvas.nodes if (r := n.rect) is not None and n.type != "group"]
    groups = [r for n in canvas.nodes if (r := n.rect) is not None and n.type == "group"]
    return Layout(nodes, groups, gap=gap)


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteOptions:
    #: vault-relative folder for the notes; default `<canvas folder>/<canvas name>-explanations`
    notes_dir: str | None = None
    #: colour of the new file nodes (None: no colour)
    node_colour: str | None = DEFAULT_NOTE_COLOUR
    #: the size of new file nodes; None: follow the canvas's scale (see `layout`)
    node_size: tuple[int, int] | None = None
    gap: int = DEFAULT_GAP
    #: places planned for the whole run before its first write (see `reserve_places`)
    reserved: Reservation | None = None
    #: part of every id we make; two namespaces never touch each other's nodes
    namespace: str = DEFAULT_NAMESPACE
    #: verdict -> colour for the question nodes pointing at a scored target; None: off
    recolour: Mapping[str, str] | None = None
    keep_backups: int = DEFAULT_KEEP_BACKUPS
    #: fanout's data dir for locks and backups (default `fanout.paths.data_dir()`)
    data_dir: Path | None = None
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S
    #: agent -> the label of its edges (the agent's display name); missing: the agent id
    edge_labels: Mapping[str, str] | None = None
    #: put back notes and edges the learner deleted (default: a deletion is respected)
    restore_deleted: bool = False
    #: the run writing (names its backups, so `restore` can undo the whole run)
    run_id: str | None = None
    #: tries of a write that fails with an OS error before giving up
    attempts: int = 3
    #: times we re-read and merge again when the canvas changes under us
    max_merges: int = 20


@dataclass(frozen=True, slots=True)
class PlannedNote:
    target_id: str
    agent: str
    node_id: str
    edge_id: str
    #: the note file (absolute) and its vault-relative path as the file node stores it
    path: Path
    vault_path: str
    rect: Rect
    node_action: Literal["add", "keep"]
    #: "deleted": the learner deleted our edge; it stays deleted
    edge_action: Literal["add", "keep", "deleted"]
    #: the note's whole text: the link back to the canvas and the quote, then the result
    text: str = ""


@dataclass(frozen=True, slots=True)
class SkippedResult:
    target_id: str
    agent: str
    reason: str
    #: the learner deleted this note's node: respected, not a failure
    deleted: bool = False

    def __str__(self) -> str:
        return f"{self.target_id} / {self.agent}: {self.reason}"


@dataclass(slots=True)
class WritePlan:
    """The canvas with our additions (not written), and what goes where."""

    canvas: Canvas
    notes: list[PlannedNote] = field(default_factory=list)
    skipped: list[SkippedResult] = field(default_factory=list)
    #: (node id, new colour) of recoloured question nodes
    recoloured: list[tuple[str, str]] = field(default_factory=list)


def render_note(result: NoteResult, header: str = "") -> str:
    """The note's exact text: `header` (see `note_header`), then the result's text under
    `# title` if it has one."""
    body = f"# {result.title}\n\n{result.text}" if result.title else result.text
    return f"{header}{body}"


#: characters of the target's first line quoted at the top of a note
QUOTE_CHARS = 200


def note_header(canvas_vault_path: str, target: Node) -> str:
    """What every note starts with: a link back to its canvas (Obsidian opens it), and the
    first line of the node it explains, quoted, so the note makes sense on its own."""
    if target.type == "file":
        first = f"[[{target.file}]]" if target.file else ""
    else:
        lines = (line.strip() for line in (target.text or target.label or "").splitlines())
        first = next((line for line in lines if line), "")
        if len(first) > QUOTE_CHARS:
            first = first[: QUOTE_CHARS - 1] + "…"
    quote = f"> {first}\n\n" if first else ""
    header = f"[[{canvas_vault_path}]]\n\n{quote}"
    # a lone surrogate in the learner's text cannot be written as UTF-8: show it as "?"
    return header.encode("utf-8", "replace").decode("utf-8")


def notes_folder(canvas_path: Path, vault_root: Path, notes_dir: str | None) -> Path:
    """The folder the notes go in; `ConfigError` if it would leave the vault."""
    if notes_dir is None:
        # the canvas's own name, spaces and all: the learner finds the folder by it
        name = folder_component(Path(canvas_path).stem) + "-explanations"
        folder = Path(canvas_path).absolute().parent / name
    else:
        resolved = resolve_in_vault(vault_root, notes_dir.rstrip("/") or ".")
        if resolved is None:
            raise ConfigError(f"notes folder {notes_dir!r} is not inside the vault {vault_root}")
        folder = resolved
    if not is_inside(vault_root, folder):
        raise ConfigError(f"notes folder {folder} is not inside the vault {vault_root}")
    return folder


def merge_results(
    disk: Canvas,
    results: Sequence[NoteResult],
    *,
    canvas_path: Path,
    vault_root: Path,
    options: WriteOptions,
    written: tuple[set[str], set[str]] = (set(), set()),
) -> WritePlan:
    """`disk` plus our notes' nodes and edges (a deep copy; `disk` is not changed).

    `written` holds the ids of the nodes and edges written on this canvas before: one of
    them missing now was deleted by the learner and is not put back (unless
    `options.restore_deleted`)."""
    canvas = Canvas(copy.deepcopy(disk.data), path=disk.path, style=disk.style)
    plan = WritePlan(canvas)
    folder = notes_folder(canvas_path, vault_root, options.notes_dir)
    ns = options.namespace
    claimed: set[str] = set()
    pending: list[_Pending] = []
    seen: set[tuple[str, str]] = set()
    # indexes made once: a 3,000-node canvas gets hundreds of notes
    edge_by_id = {e.id: e for e in canvas.edges if e.id is not None}
    incoming: dict[str, list[Edge]] = {}
    for edge in canvas.valid_edges():
        incoming.setdefault(edge.to_node or "", []).append(edge)
    for result in results:
        if (result.target_id, result.agent) in seen:
            raise ValueError(f"two results for target {result.target_id!r} and {result.agent!r}")
        seen.add((result.target_id, result.agent))
        target = canvas.node(result.target_id)
        if target is None:
            plan.skipped.append(_skip(result, "the target node is no longer on the canvas"))
            continue
        if target.rect is None:
            plan.skipped.append(_skip(result, "the target node has no position"))
            continue
        node_id, edge_id, ours, has_edge = _free_ids(canvas, edge_by_id, result, ns)
        if ours is None and node_id in written[0] and not options.restore_deleted:
            plan.skipped.append(
                SkippedResult(
                    result.target_id,
                    result.agent,
                    "its note was deleted from the canvas: left out (--restore-deleted "
                    "brings it back)",
                    deleted=True,
                )
            )
            continue
        short = short_id_for(result.target_id, result.agent, ns)
        name = name_source(canvas, target, incoming.get(result.target_id, []), ns)
        path = _note_path(result, name, ours, short, folder, vault_root, claimed)
        claimed.add(str(path).casefold())
        pending.append(_Pending(result, target.rect, node_id, edge_id, path, ours, has_edge))
    spots = _places(canvas, pending, options)
    new_nodes: list[dict[str, Any]] = []
    new_edges: list[dict[str, Any]] = []
    canvas_rel = vault_path(vault_root, canvas_path)
    for p in pending:
        rel = vault_path(vault_root, p.path)
        target_node = canvas.node(p.result.target_id)
        header = note_header(canvas_rel, target_node) if target_node is not None else ""
        if p.ours is None:
            spot = spots[p.node_id]
            rect, from_side, to_side = spot.rect, spot.from_side, spot.to_side
            new_nodes.append(_file_node(p.node_id, rel, rect, options.node_colour))
        else:
            rect = p.ours.rect or Rect(0, 0, *(options.node_size or (400, 300)))
            from_side, to_side = _facing_sides(p.anchor, rect)
            if p.ours.file != rel:
                p.ours.raw["file"] = rel
        edge_deleted = (
            not p.has_edge
            and p.ours is not None
            and p.edge_id in written[1]
            and not options.restore_deleted
        )
        if not p.has_edge and not edge_deleted:
            label = (options.edge_labels or {}).get(p.result.agent, p.result.agent)
            new_edges.append(_edge(p, from_side, to_side, label))
        plan.notes.append(
            PlannedNote(
                p.result.target_id,
                p.result.agent,
                p.node_id,
                p.edge_id,
                p.path,
                rel,
                rect,
                "keep" if p.ours else "add",
                "deleted" if edge_deleted else "keep" if p.has_edge else "add",
                render_note(p.result, header),
            )
        )
        verdict = p.result.verdict
        if verdict and options.recolour and verdict in options.recolour:
            _recolour(canvas, p.result.target_id, options.recolour[verdict], ns, plan)
    _insert_ours(canvas, new_nodes, new_edges, options.reserved, ns)
    return plan


def _places(
    canvas: Canvas, pending: Sequence[_Pending], options: WriteOptions
) -> dict[str, Placement]:
    """node id -> place, for the new nodes: the reserved slot where there is one and it is
    still free, else a place found on the canvas as it is now (as one stack per target)."""
    reserved = options.reserved
    solid = [r for n in canvas.nodes if (r := n.rect) is not None and n.type != "group"]
    out: dict[str, Placement] = {}
    live: dict[str, list[_Pending]] = {}
    seen: dict[str, int] = {}
    for p in pending:
        k = seen[p.result.target_id] = seen.get(p.result.target_id, -1) + 1
        if p.ours is not None:
            continue
        slots = reserved.slots.get(p.result.target_id, ()) if reserved else ()
        if k < len(slots) and not any(slots[k].rect.overlaps(r) for r in solid):
            out[p.node_id] = slots[k]
        else:
            live.setdefault(p.result.target_id, []).append(p)
    if live:
        layout = _layout_of(canvas, options.gap)
        for spot in out.values():
            layout.add(spot.rect)
        size = options.node_size
        for group in live.values():
            fixed = (float(size[0]), float(size[1])) if size else None
            for p, spot in zip(
                group, layout.place(group[0].anchor, len(group), fixed), strict=True
            ):
                out[p.node_id] = spot
    return out


def _insert_ours(
    canvas: Canvas,
    nodes: list[dict[str, Any]],
    edges: list[dict[str, Any]],
    reserved: Reservation | None,
    ns: str,
) -> None:
    """Adds our new nodes and edges. Those in reserved slots go in slot order among ours
    (before the first of ours with a later slot): the file then lists them in one order
    whatever order the writes came in. The rest go at the end."""
    if not nodes and not edges:
        return
    rank = reserved.rank if reserved else {}

    def node_rank(raw: Any) -> tuple[int, int] | None:
        if not isinstance(raw, dict) or not is_our_id(raw.get("id"), ns):
            return None
        rect = Node(raw, 0).rect
        return rank.get(rect) if rect is not None else None

    data_nodes = canvas.data.setdefault("nodes", [])
    by_id = {raw.get("id"): node_rank(raw) for raw in data_nodes if isinstance(raw, dict)}
    for raw in nodes:
        by_id[raw["id"]] = node_rank(raw)
        _insert(data_nodes, raw, node_rank(raw), node_rank)
    data_edges = canvas.data.setdefault("edges", [])

    def edge_rank(raw: Any) -> tuple[int, int] | None:
        if not isinstance(raw, dict) or not is_our_id(raw.get("id"), ns):
            return None
        return by_id.get(raw.get("toNode"))

    for raw in edges:
        _insert(data_edges, raw, edge_rank(raw), edge_rank)
    canvas.refresh()


def _insert(
    items: list[Any], raw: dict[str, Any], key: tuple[int, int] | None, key_of: Any
) -> None:
    if key is not None:
        for i, other in enumerate(items):
            other_key = key_of(other)
            if other_key is not None and other_key > key:
                items.insert(i, raw)
                return
    items.append(raw)


#: ids tried for one note before giving up (a canvas would need that many clashing ids)
_ID_ATTEMPTS = 100


def _free_ids(
    canvas: Canvas, edges: Mapping[str, Edge], result: NoteResult, ns: str
) -> tuple[str, str, Node | None, bool]:
    """The note's node and edge ids, its node if already on the canvas, and whether its edge
    is. An id some node or edge of the learner's already has is passed over for the next
    stable one: the note is written under that, never silently dropped."""
    for attempt in range(1, _ID_ATTEMPTS + 1):
        node_id = node_id_for(result.target_id, result.agent, ns, attempt=attempt)
        edge_id = edge_id_for(result.target_id, result.agent, ns, attempt=attempt)
        ours = canvas.node(node_id)
        if ours is not None and (not isinstance(ours.raw, dict) or ours.type != "file"):
            continue  # a node of the learner's with our id
        edge = edges.get(edge_id)
        if edge is not None and (edge.to_node != node_id or edge.from_node != result.target_id):
            continue  # an edge of the learner's with our id
        return node_id, edge_id, ours, edge is not None
    raise CanvasWriteError(
        f"no free node id for the note of {result.target_id!r} by {result.agent!r} "
        f"after {_ID_ATTEMPTS} tries; the canvas is as it was"
    )


@dataclass(frozen=True, slots=True)
class _Pending:
    result: NoteResult
    anchor: Rect
    node_id: str
    edge_id: str
    path: Path
    ours: Node | None
    has_edge: bool


def _skip(result: NoteResult, reason: str) -> SkippedResult:
    return SkippedResult(result.target_id, result.agent, reason)


def _note_path(
    result: NoteResult,
    name: str,
    ours: Node | None,
    short: str,
    folder: Path,
    vault_root: Path,
    claimed: set[str],
) -> Path:
    # 1. the note our node already points at (Obsidian updates it when a note is moved)
    if ours is not None and ours.file and ours.file.lower().endswith(".md"):
        existing = resolve_in_vault(vault_root, ours.file)
        if existing is not None and str(existing).casefold() not in claimed:
            return existing
    # 2. a note with our short id that a run killed before its canvas write left behind
    if folder.is_dir():
        for leftover in sorted(folder.glob(f"*-{short}.md")):
            if leftover.is_file() and str(leftover).casefold() not in claimed:
                return leftover
    # 3. a new name
    attempt = 1
    while True:
        candidate = folder / note_file_name(result.agent, name, short, attempt=attempt)
        taken = str(candidate).casefold() in claimed
        if not taken and (candidate.is_file() or not candidate.exists()):
            return candidate
        attempt += 1


def name_source(canvas: Canvas, target: Node, into: Sequence[Edge], ns: str) -> str:
    """What a note is named after: the question the target answers (the first text or
    note with an edge `into` it), not the learner's answer, which may be wrong; with no
    question, the target's own text or file name."""
    for edge in into:
        if is_our_id(edge.from_node, ns):
            continue
        source = canvas.node(edge.from_node or "")
        if source is None or not source.valid or source.type not in ("text", "file"):
            continue
        name = source.text or PurePosixPath(source.file or "").stem
        if name.strip():
            return name
    return target.text or PurePosixPath(target.file or "").stem or target.label or ""


def _file_node(node_id: str, rel: str, rect: Rect, colour: str | None) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "id": node_id,
        "type": "file",
        "file": rel,
        "x": int(rect.x),
        "y": int(rect.y),
        "width": int(rect.width),
        "height": int(rect.height),
    }
    if colour is not None:
        raw["color"] = colour
    return raw


def _edge(p: _Pending, from_side: str, to_side: str, label: str) -> dict[str, Any]:
    return {
        "id": p.edge_id,
        "fromNode": p.result.target_id,
        "fromSide": from_side,
        "toNode": p.node_id,
        "toSide": to_side,
        "label": label,
    }


def _facing_sides(target: Rect, node: Rect) -> tuple[str, str]:
    """The sides an edge from `target` to `node` should leave and enter by."""
    dx = (node.x + node.width / 2) - (target.x + target.width / 2)
    dy = (node.y + node.height / 2) - (target.y + target.height / 2)
    if abs(dx) >= abs(dy):
        return ("right", "left") if dx >= 0 else ("left", "right")
    return ("bottom", "top") if dy >= 0 else ("top", "bottom")


def _recolour(canvas: Canvas, target_id: str, colour: str, ns: str, plan: WritePlan) -> None:
    for edge in canvas.valid_edges():
        if edge.to_node != target_id:
            continue
        node = canvas.node(edge.from_node or "")
        if node is None or not node.valid or node.type not in ("text", "file"):
            continue
        if is_our_id(node.id, ns) or node.id == target_id:
            continue
        if normalize_colour(node.raw.get("color")) != normalize_colour(colour):
            node.raw["color"] = colour
            plan.recoloured.append((node.id or "", colour))
