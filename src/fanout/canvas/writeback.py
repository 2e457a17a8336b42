"""Writing results back: notes in the vault, then the canvas, never corrupting or losing.

The protocol of `write_results`, under the canvas's cross-process lock:

1. read the canvas as it is on disk now, merge our additions onto it (`merge_results`);
2. write each note atomically and read it back: its bytes must be the result's text;
3. write the merged canvas to a temp file beside it and fsync it;
4. hash the canvas on disk once more: if it changed since step 1, go back to 1;
5. swap the temp file in (Linux: an atomic exchange that hands back what it replaced: if
   that is not what we merged onto, someone wrote in the last instant, so we swap it
   straight back and go to 1; elsewhere: `os.replace`), fsync the folder; back up the
   canvas as read in step 1 to the data dir;
6. read the canvas back: it must be what we wrote, or (if someone wrote since) still hold
   our nodes and edges; else go to 1.

An OS error while writing is retried (`attempts`), then `CanvasWriteError`, the canvas left
as it was and the notes this call created removed. Text is never truncated.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from fanout.canvas.io import dump_bytes, load_canvas, parse_canvas
from fanout.canvas.merge import (
    NoteResult,
    PlannedNote,
    SkippedResult,
    WriteOptions,
    WritePlan,
    merge_results,
    notes_folder,
)
from fanout.canvas.model import Canvas, CanvasWarning, CanvasWriteError, Rect
from fanout.canvas.safefile import (
    atomic_write,
    canvas_lock,
    exchange,
    fsync_dir,
    read_written,
    record_written,
    remove_stale_temps,
    save_backup,
    write_temp,
)
from fanout.canvas.vault import find_vault_root, is_inside
from fanout.errors import InputError

T = TypeVar("T")
NoteAction = Literal["created", "updated", "unchanged"]

#: a test seam: called with the canvas path and the new content before the last hash check
_before_swap: Callable[[Path, bytes], None] | None = None


@dataclass(frozen=True, slots=True)
class NoteWrite:
    """What happened for one result."""

    target_id: str
    agent: str
    path: Path
    vault_path: str
    node_id: str
    edge_id: str
    #: where the file node is (for a kept node: where the learner left it)
    rect: Rect
    note: NoteAction
    node: Literal["added", "kept"]
    #: "deleted": the learner deleted the edge; left out
    edge: Literal["added", "kept", "deleted"]


@dataclass(slots=True)
class WriteReport:
    canvas_path: Path
    notes: list[NoteWrite] = field(default_factory=list)
    skipped: list[SkippedResult] = field(default_factory=list)
    #: (node id, colour) of question nodes recoloured by a verdict
    recoloured: list[tuple[str, str]] = field(default_factory=list)
    #: the backup of the canvas as it was before this write (None if nothing changed)
    backup: Path | None = None
    #: False when the canvas already held everything (a rerun)
    changed: bool = False
    #: how many times the canvas was read and merged (more than 1: it changed under us)
    merges: int = 0
    warnings: list[CanvasWarning] = field(default_factory=list)


def plan_writeback(
    canvas_path: str | Path,
    results: Sequence[NoteResult | tuple[str, str]],
    options: WriteOptions | None = None,
) -> WritePlan:
    """What `write_results` would do now (notes, nodes, edges, places); writes nothing.

    `results` may be `(target_id, agent)` pairs when the texts are not known yet.
    """
    path = Path(canvas_path)
    items = [r if isinstance(r, NoteResult) else NoteResult(r[0], r[1], "") for r in results]
    canvas = load_canvas(path)
    return merge_results(
        canvas,
        items,
        canvas_path=path,
        vault_root=find_vault_root(path),
        options=options or WriteOptions(),
    )


def write_results(
    canvas_path: str | Path, results: Sequence[NoteResult], options: WriteOptions | None = None
) -> WriteReport:
    """Write each result as a note + file node + edge; rerunning updates instead of adding.

    `InputError` if the canvas cannot be read (nothing written); `CanvasWriteError` if it
    could not be written safely (canvas left as it was).
    """
    opts = options or WriteOptions()
    path = Path(canvas_path)
    load_canvas(path)  # a bad canvas is reported before anything is written
    bad = [r for r in results if not (_is_utf8(r.text) and _is_utf8(r.title or ""))]
    good = [r for r in results if _is_utf8(r.text) and _is_utf8(r.title or "")]
    with canvas_lock(path, timeout=opts.lock_timeout, base=opts.data_dir):
        remove_stale_temps(Path(os.path.realpath(path)))
        report = _commit(path, good, opts)
    report.skipped.extend(
        SkippedResult(r.target_id, r.agent, "text has a lone surrogate: not Unicode") for r in bad
    )
    return report


async def write_results_async(
    canvas_path: str | Path, results: Sequence[NoteResult], options: WriteOptions | None = None
) -> WriteReport:
    """`write_results` in a worker thread, for use inside an event loop."""
    return await asyncio.to_thread(write_results, canvas_path, results, options)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _retry(opts: WriteOptions, what: str, path: Path, func: Callable[[], T]) -> T:
    for attempt in range(1, max(opts.attempts, 1) + 1):
        try:
            return func()
        except OSError as exc:
            if attempt >= max(opts.attempts, 1):
                raise CanvasWriteError(
                    f"{path}: could not {what} ({exc.strerror or exc}); "
                    f"tried {attempt} times; the canvas is as it was"
                ) from exc
            time.sleep(0.01 * 2**attempt)
    raise AssertionError("unreachable")


def _read_canvas(path: Path) -> tuple[bytes, Canvas]:
    """The canvas on disk now; a few tries if it does not parse (a writer mid-write)."""
    for attempt in range(5):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
        try:
            return data, parse_canvas(data, path=path)
        except InputError:
            if attempt == 4:
                raise
            time.sleep(0.02 * (attempt + 1))
    raise AssertionError("unreachable")


def _commit(path: Path, results: Sequence[NoteResult], opts: WriteOptions) -> WriteReport:
    report = WriteReport(canvas_path=path)
    vault = find_vault_root(path)
    # read and replace the file itself: replacing a symlink would cut it off its target
    file = Path(os.path.realpath(path))
    created: list[Path] = []
    first_action: dict[Path, NoteAction] = {}
    # note temp files a killed run left (other runs may be writing theirs: only old ones)
    remove_stale_temps(notes_folder(path, vault, opts.notes_dir), min_age_s=600)
    done = False
    try:
        for merge in range(1, max(opts.max_merges, 1) + 1):
            report.merges = merge
            disk, canvas = _read_canvas(file)
            report.warnings = list(canvas.warnings)
            written = read_written(file, opts.data_dir)
            plan = merge_results(
                canvas, results, canvas_path=path, vault_root=vault, options=opts, written=written
            )
            report.notes = []
            for note in plan.notes:
                action = _write_note(note, note.text, vault, created, opts)
                # after a re-merge a note we wrote a moment ago reads "unchanged": say what we did
                action = first_action.setdefault(note.path, action)
                report.notes.append(_note_write(note, action))
            report.skipped = list(plan.skipped)
            report.recoloured = list(plan.recoloured)
            new = dump_bytes(plan.canvas)
            if new == disk:
                done = True
            elif (backup := _swap_in(file, disk, new, plan, opts)) is not None:
                report.backup, report.changed, done = backup, True, True
            if done:
                _remove_unused(created, {n.path for n in plan.notes})
                nodes = {n.node_id for n in plan.notes}
                edges = {n.edge_id for n in plan.notes if n.edge_action != "deleted"}
                record_written(file, nodes, edges, base=opts.data_dir)
                return report
            # it changed under us: let a burst of edits (an editor saving) settle a little
            time.sleep(min(0.002 * 2**merge, 0.2) * random.uniform(0.5, 1.0))
        raise CanvasWriteError(
            f"{path}: the canvas kept changing while we wrote ({opts.max_merges} merges); "
            "it is as it was: try again"
        )
    finally:
        if not done:
            _remove_unreferenced(file, vault, created)


def _write_note(
    note: PlannedNote, text: str, vault: Path, created: list[Path], opts: WriteOptions
) -> NoteAction:
    data = text.encode("utf-8")
    if not is_inside(vault, note.path.parent) and note.path.parent.exists():
        raise CanvasWriteError(f"{note.path}: outside the vault {vault}; not written")
    try:
        before = note.path.read_bytes() if note.path.is_file() else None
    except OSError:
        before = None
    if before == data:
        return "unchanged"

    def write() -> None:
        note.path.parent.mkdir(parents=True, exist_ok=True)
        if not is_inside(vault, note.path):
            raise CanvasWriteError(f"{note.path}: outside the vault {vault}; not written")
        atomic_write(note.path, data)

    _retry(opts, f"write the note {note.path.name}", note.path, write)
    if before is None:
        created.append(note.path)
    if note.path.read_bytes() != data:
        raise CanvasWriteError(f"{note.path}: the note does not read back as written")
    return "created" if before is None else "updated"


def _note_write(n: PlannedNote, action: NoteAction) -> NoteWrite:
    return NoteWrite(
        n.target_id,
        n.agent,
        n.path,
        n.vault_path,
        n.node_id,
        n.edge_id,
        n.rect,
        action,
        "added" if n.node_action == "add" else "kept",
        "added" if n.edge_action == "add" else "deleted" if n.edge_action == "deleted" else "kept",
    )


def _swap_in(
    path: Path, disk: bytes, new: bytes, plan: WritePlan, opts: WriteOptions
) -> Path | None:
    """Steps 3-6; the backup made if `new` is in place and verified, None to merge again."""
    # the backup of what we read comes first: when it cannot be written (a full disk) the
    # canvas is left as it was, rather than changed with no copy of what it held
    backup = _retry(
        opts,
        "back up the canvas",
        path,
        lambda: save_backup(
            path, disk, keep=opts.keep_backups, base=opts.data_dir, run_id=opts.run_id
        ),
    )
    tmp = _retry(opts, "write a temp file", path, lambda: write_temp(path, new))
    try:
        if _before_swap is not None:
            _before_swap(path, new)
        if _sha(path.read_bytes()) != _sha(disk):
            return None  # changed since we read it: merge onto the new content
        if _retry(opts, "replace the canvas", path, lambda: exchange(tmp, path)):
            if tmp.read_bytes() != disk:
                _give_back(tmp, path, new)
                return None
        else:
            _retry(opts, "replace the canvas", path, lambda: os.replace(tmp, path))
        fsync_dir(path.parent)
        return backup if _verify(path, new, plan) else None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _give_back(tmp: Path, path: Path, new: bytes) -> None:
    """Someone wrote the canvas in the instant before our swap: put their file back."""
    exchange(tmp, path)
    if tmp.read_bytes() != new:
        # and someone wrote again in between: theirs is the newest, put it back too
        exchange(tmp, path)


def _verify(path: Path, new: bytes, plan: WritePlan) -> bool:
    back = path.read_bytes()
    if back == new:
        return True
    try:
        canvas = parse_canvas(back, path=path)  # written over since: ours must still be there
    except InputError:
        return False
    edges = {e.id for e in canvas.edges}
    return all(
        n.node_id in canvas and (n.edge_id in edges or n.edge_action == "deleted")
        for n in plan.notes
    )


def _remove_unused(created: list[Path], used: set[Path]) -> None:
    """Notes this call created that a later merge did not use after all."""
    for note in created:
        if note not in used:
            with contextlib.suppress(OSError):
                note.unlink()


def _remove_unreferenced(file: Path, vault: Path, created: list[Path]) -> None:
    """After a failed write, the notes this call created that the canvas does not use."""
    if not created:
        return
    try:
        canvas = parse_canvas(file.read_bytes(), path=file)
    except (OSError, InputError):
        return  # cannot tell which are used: keep them all
    used = {os.path.abspath(vault / n.file) for n in canvas.nodes if n.file}
    for note in created:
        if os.path.abspath(note) not in used:
            with contextlib.suppress(OSError):
                note.unlink()
