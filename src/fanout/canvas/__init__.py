"""Obsidian canvases (JSON Canvas 1.0): read, pick targets, write results back safely.

The canvas side of `fanout canvas`; it knows nothing of the engine. A workflow uses it so:

```python
from fanout.canvas import NoteResult, WriteOptions, find_targets, load_canvas, write_results

canvas = load_canvas("vault/离散数学.canvas")          # InputError: file + line:col or id
sel = find_targets(canvas, colour="3")                   # or ids=[...], group="命题逻辑"
for w in sel.warnings: ...                               # malformed nodes, dangling edges
for s in sel.skipped: ...                                # empty / placeholder / malformed
if not sel.targets and sel.hint: print(sel.hint.message)  # e.g. this vault uses colour "6"
for t in sel.targets:
    t.node_id, t.text, t.question, t.context, t.group_label, t.canvas_title
    prompt_inputs = t.inputs()           # {"question", "learner_text", "topic", "context"}
plan = plan_writeback(path, [(t.node_id, agent) ...])    # where notes/nodes would go; no writes
report = write_results(path, [NoteResult(t.node_id, "oral-explanation", text)], WriteOptions())
report.notes    # NoteWrite: path, vault_path, node_id, edge_id, note created/updated/unchanged
restore(path)   # put the newest backup back (or restore(path, backup=...))
```

API
- `load_canvas(path) -> Canvas`, `parse_canvas(bytes|str, path=) -> Canvas`,
  `dumps_canvas(canvas) -> str` (the file's own text, with only what changed rewritten and
  new nodes and edges in its style). `Canvas.data` is the file's top-level dict; `Canvas.nodes`
  / `.edges` are `Node` / `Edge` views over its dicts (typed accessors: `id`, `type`, `text`,
  `file`, `subpath`, `url`, `label`, `background`, `background_style`, `color`, `rect`;
  `from_node`, `to_node`, `from_side`, `to_side`, `from_end`, `to_end`). `Canvas.warnings`.
- `find_targets(canvas, *, colour="3", ids=None, group=None, placeholders=..., namespace=,
  vault_root=None, note_chars=8000) -> Selection` (`.targets`, `.skipped`, `.warnings`,
  `.hint`); `colour_hint(canvas, colour) -> ColourHint | None`; `is_placeholder(text)`.
- `plan_writeback(path, results_or_pairs, options=None) -> WritePlan`;
  `write_results(path, results, options=None) -> WriteReport` (blocking: in an event loop
  use `write_results_async`, which runs it in a thread); `WriteOptions(notes_dir=,
  node_colour="5", node_size=None, gap=40, reserved=None, namespace="fanout", recolour=None,
  keep_backups=20, data_dir=None, lock_timeout=30, attempts=3, max_merges=20)`;
  `reserve_places(canvas, [(target id, count)]) -> Reservation` (every place planned up
  front; the canvas sink does this, so writes may come in any order).
- `restore(path, backup=None, run_id=None) -> Path` (default: undo the latest run, all
  its writes), `list_backups(path) -> list[Path]`,
  `canvas_lock(path)` (the cross-process lock, for anything else that rewrites a canvas).
- `node_id_for(target, agent)`, `edge_id_for(...)`, `find_vault_root(path)`, `data_dir()`.

Rules
- Ids we make: `<namespace>-<16 hex>` (nodes) and `<namespace>-e<15 hex>` (edges), from
  sha256(namespace, target id, agent): a rerun finds and keeps them, adding nothing.
- Ids we make are passed over for the next stable one when a node or edge of the learner's
  already has them: a note is never dropped for a clash.
- Notes: `<canvas folder>/<canvas name>-explanations/<agent>-<slug of the question>-<8
  hex>.md` unless `notes_dir` (vault-relative) says otherwise; a note a node of ours
  already points at is updated where it is. A note is a link back to its canvas, the first
  line of its target quoted, then the result's text whole (under `# title` if given).
- The vault is where the canvas was opened from (a symlink to a canvas elsewhere keeps its
  notes in the vault); `WriteOptions(edge_labels=)` labels edges (the workflow passes the
  agents' names in the canvas's language); a node or edge of ours that the learner
  deleted is left out unless `restore_deleted`.
- New nodes are appended to `nodes`, edges to `edges`; nothing else in the file changes,
  except question nodes recoloured by a verdict when `recolour` maps it (off by default).
  A target's notes form one stack beside it (right, else below, left, above), sized from
  the target and its neighbours (160 x 60 to 400 x 300), nearer their target than any other
  node and with edges crossing none where the canvas has room (`canvas/layout.py`);
  overlapping no node; a note may sit inside a group that holds its target, never across
  or in another group. With a `Reservation` our new nodes and edges are inserted in slot
  order, so the file is the same whatever order the writes came in.
  Our nodes and edges already on the canvas are kept where and as the learner left them.
- Locks: `<data>/locks/<canvas key>.lock`; backups: `<data>/canvas-backups/<canvas key>/`;
  `<data>` is `$FANOUT_HOME` or the user data dir (`fanout.paths.data_dir()`), never the vault.
"""

from fanout.canvas.io import dump_bytes, dumps_canvas, load_canvas, parse_canvas
from fanout.canvas.layout import DEFAULT_NODE_SIZE, Placement, place_nodes
from fanout.canvas.merge import (
    DEFAULT_NOTE_COLOUR,
    ORIGINAL_VERDICT_COLOURS,
    SPEC_VERDICT_COLOURS,
    NoteResult,
    PlannedNote,
    Reservation,
    SkippedResult,
    WriteOptions,
    WritePlan,
    merge_results,
    render_note,
    reserve_places,
)
from fanout.canvas.model import (
    DEFAULT_TARGET_COLOUR,
    ORIGINAL_SYSTEM_YELLOW,
    Canvas,
    CanvasWarning,
    CanvasWriteError,
    Edge,
    Node,
    Rect,
)
from fanout.canvas.naming import edge_id_for, is_our_id, node_id_for
from fanout.canvas.safefile import canvas_lock, list_backups, restore
from fanout.canvas.targets import (
    DEFAULT_PLACEHOLDERS,
    ColourHint,
    ContextNode,
    Selection,
    Skipped,
    Target,
    colour_hint,
    find_targets,
    is_placeholder,
)
from fanout.canvas.vault import find_vault_root
from fanout.canvas.writeback import (
    NoteWrite,
    WriteReport,
    plan_writeback,
    write_results,
    write_results_async,
)
from fanout.paths import data_dir

__all__ = [
    "DEFAULT_NODE_SIZE",
    "DEFAULT_NOTE_COLOUR",
    "DEFAULT_PLACEHOLDERS",
    "DEFAULT_TARGET_COLOUR",
    "ORIGINAL_SYSTEM_YELLOW",
    "ORIGINAL_VERDICT_COLOURS",
    "SPEC_VERDICT_COLOURS",
    "Canvas",
    "CanvasWarning",
    "CanvasWriteError",
    "ColourHint",
    "ContextNode",
    "Edge",
    "Node",
    "NoteResult",
    "NoteWrite",
    "Placement",
    "PlannedNote",
    "Rect",
    "Reservation",
    "Selection",
    "Skipped",
    "SkippedResult",
    "Target",
    "WriteOptions",
    "WritePlan",
    "WriteReport",
    "canvas_lock",
    "colour_hint",
    "data_dir",
    "dump_bytes",
    "dumps_canvas",
    "edge_id_for",
    "find_targets",
    "find_vault_root",
    "is_our_id",
    "is_placeholder",
    "list_backups",
    "load_canvas",
    "merge_results",
    "node_id_for",
    "parse_canvas",
    "place_nodes",
    "plan_writeback",
    "render_note",
    "reserve_places",
    "restore",
    "write_results",
    "write_results_async",
]
