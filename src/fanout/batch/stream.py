"""Streaming batches: a JSONL file of any length read twice, line by line, never whole.

The first pass (`scan_batch`) checks every line and keeps only what the whole file decides:
the refused lines, which ids are depended on, and whether a line depends on a later one.
The second pass (`iter_tasks`) turns the good lines into tasks again as the run needs them;
`Feed` keeps a bounded window of them in the engine, adding more as tasks finish and letting
finished ones go from memory once durable (the store keeps them). So a million lines cost
the memory of the window, not of the file.
"""

from __future__ import annotations

import os
import sqlite3
from array import array
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from fanout.batch.parse import DEFAULT_MAX_LINE_BYTES, LineError, open_input, parse_line
from fanout.errors import ConfigError, InputError
from fanout.tasks import Task

if TYPE_CHECKING:
    from fanout.agents import Blueprint
    from fanout.engine.events import Event
    from fanout.engine.run import Run

#: tasks held in the engine at once: enough to keep every worker busy with room for
#: retries and cache waits; the window refills when a quarter of it has finished
MIN_WINDOW = 2048
WINDOW_PER_SLOT = 8
#: the acks (sink positions) a streamed batch keeps its input mark in: the byte offset of
#: a line and the number of its task; every line above it has its task in the store
MARK_OFFSET = "batch.input.offset"
MARK_TASK = "batch.input.task"


def window_for(concurrency: int) -> int:
    """How many tasks a streamed batch keeps in the engine at `concurrency`."""
    return max(MIN_WINDOW, WINDOW_PER_SLOT * concurrency)


@dataclass(slots=True)
class Scan:
    """What the first pass over an input file found (the file itself is not kept)."""

    lines: int  # non-blank lines: the number of output lines
    tasks: int  # lines that become tasks
    errors: list[LineError]  # the refused lines, in line order
    referenced: frozenset[str]  # ids some line depends on: kept in memory while they run
    forward: bool  # some line depends on a later line (tasks are then not in line order)
    size: int  # the file's size and modification time: a resume checks it is unchanged
    mtime_ns: int


def input_lines(f: BinaryIO, name: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line of a JSONL file. Lines end at b"\\n" only
    (see `parse.jsonl_lines`); text that is not UTF-8 raises `InputError` with its byte."""
    for i, _, line in lines_at(f, name):
        yield i, line


def lines_at(
    f: BinaryIO, name: str, start: int = 0, first: int = 1
) -> Iterator[tuple[int, int, str]]:
    """(line number, byte offset, text) of each non-blank line, reading from byte `start`
    (the beginning of line number `first`) on."""
    offset = start
    if start:
        f.seek(start)
    for i, raw in enumerate(f, start=first):
        try:
            line = raw.decode("utf-8-sig" if offset == 0 else "utf-8")
        except UnicodeDecodeError as exc:
            at = offset + exc.start
            raise InputError(f"{name}: not UTF-8 text (byte {at}); save it as UTF-8") from None
        at, offset = offset, offset + len(raw)
        if line.endswith("\n"):
            line = line[:-1]
        if line.endswith("\r"):
            line = line[:-1]
        if line.strip():
            yield i, at, line


class IdTable:
    """The ids of a file's good lines in 8 bytes a line: one 64-bit word per line, 32 bits
    of the id's `hash` above the line's number, in buckets by the hash's top bits, sorted
    once the file is read (a `dict[str, int]` of a million ids took 171 MB; a hash and a
    line in two words, 16 bytes a line, was the peak of a million-line batch). Lines whose
    ids share a bucket and those 32 bits are looked at again, by their text, in `settle`
    (a second read of just those lines); every other answer is by hash alone. With 42 bits
    of hash in all, a million distinct ids make such a clash about one file in nine."""

    BITS = 10  # 1,024 buckets: sorting one at a time keeps the sort's own memory small
    LINE_BITS = 32
    LINE_MASK = (1 << LINE_BITS) - 1

    def __init__(self, hash_of: Callable[[str], int] = hash) -> None:
        self._hash = hash_of  # any 64-bit signed hash (tests pass a weak one)
        self._words = [array("Q") for _ in range(1 << self.BITS)]
        self._shift = 64 - self.BITS
        #: (bucket << 32 | hash bits) -> lines whose ids share them
        self.clashes: dict[int, list[int]] = {}
        self.exact: dict[str, int] = {}  # id -> first line, for the ids of `clashes`

    def _place(self, cid: str) -> tuple[int, int]:
        """(bucket, the 32 hash bits kept in the word) of an id."""
        h = self._hash(cid)
        return (h + (1 << 63)) >> self._shift, h & self.LINE_MASK

    def add(self, cid: str, line: int) -> None:
        if not 0 <= line <= self.LINE_MASK:
            raise InputError(f"line {line}: a batch file has at most {self.LINE_MASK:,} lines")
        b, tag = self._place(cid)
        self._words[b].append(tag << self.LINE_BITS | line)

    @property
    def size(self) -> int:
        """The 64-bit words held: one per id added (tests check it is not more)."""
        return sum(len(ws) for ws in self._words)

    def seal(self) -> None:
        """Sort each bucket and note the hashes that more than one line has."""
        bits, mask = self.LINE_BITS, self.LINE_MASK
        for b, ws in enumerate(self._words):
            if len(ws) < 2:
                continue
            self._words[b] = ws = array("Q", sorted(ws))
            for i in range(1, len(ws)):
                tag = ws[i] >> bits
                if tag == ws[i - 1] >> bits:
                    self.clashes.setdefault(b << bits | tag, [ws[i - 1] & mask]).append(
                        ws[i] & mask
                    )

    def settle(
        self, ids_of: Callable[[set[int]], Iterator[tuple[int, str]]]
    ) -> list[tuple[int, str, int]]:
        """Read the ids of the clashing lines again (`ids_of(lines)` gives (line, id)):
        returns (line, id, first line) of each line whose id an earlier line has."""
        wanted = {line for lines in self.clashes.values() for line in lines}
        if not wanted:
            return []
        dups: list[tuple[int, str, int]] = []
        for line, cid in sorted(ids_of(wanted)):
            first = self.exact.get(cid)
            if first is None:
                self.exact[cid] = line
            else:
                dups.append((line, cid, first))
        return dups

    def line_of(self, cid: str) -> int | None:
        """The first line with id `cid`, or None when no good line has it."""
        b, tag = self._place(cid)
        bits = self.LINE_BITS
        if b << bits | tag in self.clashes:
            return self.exact.get(cid)
        ws = self._words[b]
        i = bisect_left(ws, tag << bits)
        if i < len(ws) and ws[i] >> bits == tag:
            return ws[i] & self.LINE_MASK
        return None


def scan_batch(
    path: str | os.PathLike[str],
    blueprints: Mapping[str, Blueprint] | None = None,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Scan:
    """The first pass: every line checked, the same way `parse_lines` checks them, in
    memory that grows by about 8 bytes a line (the ids' hashes, for duplicates and
    dependencies)."""
    errors: list[LineError] = []
    ids = IdTable()
    deps: dict[int, tuple[str, list[str]]] = {}  # line -> (id, depends_on) of lines with any
    lines = 0
    with open_input(path) as f:
        st = os.fstat(f.fileno())
        for i, line in input_lines(f, str(path)):
            lines += 1
            item = parse_line(i, line, blueprints, max_line_bytes)
            if isinstance(item, LineError):
                errors.append(item)
                continue
            ids.add(item.key, i)
            if item.depends_on:
                deps[i] = (item.key, [d for d in item.depends_on if isinstance(d, str)])
    ids.seal()

    def ids_of(wanted: set[int]) -> Iterator[tuple[int, str]]:
        with open_input(path) as f:
            for i, line in input_lines(f, str(path)):
                if i in wanted:
                    item = parse_line(i, line, blueprints, max_line_bytes)
                    if not isinstance(item, LineError):
                        yield i, item.key

    for i, cid, first in ids.settle(ids_of):
        errors.append(LineError(i, cid, f"duplicate id {cid!r} (first on line {first})"))
        deps.pop(i, None)
    line_of = _dependency_lines(ids, deps, ids_of)
    del ids  # the biggest thing the pass held: gone before the run starts
    ok = set(deps)  # the dependent lines still standing; refusing one may refuse its own
    gone: set[str] = set()  # the ids of dependents refused
    changed = True
    while changed:
        changed = False
        for at in sorted(ok):
            cid, wanted = deps[at]
            missing = [d for d in wanted if d in gone or line_of[d] is None]
            if missing:
                known = all(line_of[d] is not None for d in missing)
                where = "was refused" if known else "is not an id in this file"
                errors.append(LineError(at, cid, f"depends_on {missing[0]!r}, which {where}"))
                ok.discard(at)
                gone.add(cid)
                changed = True
    referenced = frozenset(d for at in ok for d in deps[at][1])
    forward = any((line_of[d] or 0) > at for at in ok for d in deps[at][1])
    errors.sort(key=lambda e: e.line)
    return Scan(lines, lines - len(errors), errors, referenced, forward, st.st_size, st.st_mtime_ns)


def _dependency_lines(
    ids: IdTable,
    deps: Mapping[int, tuple[str, list[str]]],
    ids_of: Callable[[set[int]], Iterator[tuple[int, str]]],
) -> dict[str, int | None]:
    """The line of each id some line depends on (None: no good line has it). The table
    answers by hash, so an id absent from the file can match another id's 42 bits (about
    one missing id in four million, at a million lines): the lines it names are read once
    more, and each kept only if its id is the one asked for."""
    found = {d: ids.line_of(d) for _, wanted in deps.values() for d in wanted}
    by_hash = {line for d, line in found.items() if line is not None and d not in ids.exact}
    if by_hash:
        actual = dict(ids_of(by_hash))
        for d, line in found.items():
            if line in by_hash and actual.get(line) != d:
                found[d] = None
    return found


class TaskReader:
    """The second pass: the task of each line not `refused` (nor skipped, by line), read
    from byte `start` (the beginning of line `first`); `offset` is where the line of the
    task last given begins (the feed's mark, `Feed.fill`)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        blueprints: Mapping[str, Blueprint] | None,
        refused: Collection[int],
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        skip: Callable[[int], bool] | None = None,
        start: int = 0,
        first: int = 1,
    ) -> None:
        self.offset = -1
        self._tasks = self._read(path, blueprints, refused, max_line_bytes, skip, start, first)

    def __iter__(self) -> Iterator[Task]:
        return self

    def __next__(self) -> Task:
        return next(self._tasks)

    def _read(
        self,
        path: str | os.PathLike[str],
        blueprints: Mapping[str, Blueprint] | None,
        refused: Collection[int],
        max_line_bytes: int,
        skip: Callable[[int], bool] | None,
        start: int,
        first: int,
    ) -> Iterator[Task]:
        with open_input(path) as f:
            for i, at, line in lines_at(f, str(path), start, first):
                if i in refused or (skip is not None and skip(i)):
                    continue
                item = parse_line(i, line, blueprints, max_line_bytes)
                if isinstance(item, LineError):  # it was good in the first pass
                    raise InputError(
                        f"{path}: changed while the batch ran (line {i}); run it again"
                    )
                self.offset = at
                yield item


def iter_tasks(
    path: str | os.PathLike[str],
    blueprints: Mapping[str, Blueprint] | None,
    refused: Collection[int],
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    skip: Callable[[int], bool] | None = None,
) -> TaskReader:
    """The second pass from the top (`TaskReader`)."""
    return TaskReader(path, blueprints, refused, max_line_bytes=max_line_bytes, skip=skip)


def check_unchanged(path: Path, size: int | None, mtime_ns: int | None) -> None:
    """Refuse to go on reading an input file that changed since its run started."""
    try:
        st = path.stat()
    except OSError:
        raise ConfigError(
            f"{path}: the input of this run is gone; put it back to resume, or export what"
            " is done with `fanout results RUN -o FILE`"
        ) from None
    if size is not None and (st.st_size != size or st.st_mtime_ns != mtime_ns):
        raise ConfigError(
            f"{path}: changed since this run started, so its lines no longer match the run's"
            " tasks; restore it to resume, or start a new batch"
        )


def resume_mark(
    db: sqlite3.Connection,
    run_id: str,
    path: Path,
    blueprints: Mapping[str, Blueprint] | None,
    max_line_bytes: int,
) -> tuple[int, int, int] | None:
    """Where a resumed feed of a batch in line order reads its input from: (byte offset,
    line number, task number) of the mark the feed left in the store (`Feed.fill`), after
    checking that the line there is the stored task's, word for word; None (read from
    the top) when there is no mark or it does not hold."""
    from fanout.store import queries
    from fanout.store.spec import spec_meta, task_spec

    offset = queries.sink_position(db, run_id, MARK_OFFSET)
    n = queries.sink_position(db, run_id, MARK_TASK)
    if offset < 0 or n < 0:
        return None
    row = db.execute(
        "SELECT t.spec FROM tasks t JOIN runs USING (rid) WHERE runs.id = ? AND t.n = ?",
        (run_id, n),
    ).fetchone()
    line = spec_meta(row[0]).get("line") if row is not None else None
    if not isinstance(line, int):
        return None
    with open_input(path) as f:
        got = next(lines_at(f, str(path), offset, line), None)
    if got is None or got[:2] != (line, offset):
        return None
    item = parse_line(line, got[2], blueprints, max_line_bytes)
    if isinstance(item, LineError) or task_spec(item) != row[0]:
        return None
    return offset, line, n


class Feed:
    """Keeps a window of a batch's tasks in its run: adds tasks as others finish, and lets
    each finished task go from memory once durable (unless a line depends on it)."""

    def __init__(
        self,
        tasks: Iterator[Task],
        window: int,
        referenced: Collection[str],
        *,
        by_line: bool = False,
        total: int = 0,
    ) -> None:
        self._tasks = tasks
        self.total = total  # the batch's tasks in all (the run sizes its retry budget on it)
        #: tasks are not numbered in line order (a line depends on a later one): the
        #: input-order output sorts by line
        self.by_line = by_line
        self.window = window
        self._refill_at = window - max(1, window // 4)
        self._referenced = referenced
        self._admitted: set[str] = set()  # the referenced ids already in the run
        self._held: list[Task] = []  # tasks whose dependency is further down the file
        self.live = 0  # tasks in the run, not yet finished
        self.most_live = 0  # the most the window ever held (tests check the bound)
        self.exhausted = False
        self.error: BaseException | None = None
        #: (byte offset, task) of the first line of the block `_take` read last: every
        #: line above it is in the run once that block is (see `fill`)
        self._mark: tuple[int, Task] | None = None
        self.read_from = 1  # the input line the feed began reading at (a resume's mark)

    def first(self) -> list[Task]:
        """The tasks the run starts with."""
        return self._take()

    def attach(self, run: Run) -> None:
        """Follow `run`: refill on each finished task; forget finished tasks; a resumed
        run's finished tasks are let go at once."""
        from fanout.engine.events import TaskFinished

        run.expect(self.total)
        self.live = 0
        for t in list(run.tasks):
            if t is None:
                continue
            if t.state.terminal:
                self._forget(run, t)
            else:
                self.live += 1
            if t.key in self._referenced:
                self._admitted.add(t.key)
        self.most_live = max(self.most_live, self.live)

        def on_event(ev: Event) -> None:
            if isinstance(ev, TaskFinished):
                self.live -= 1
                self._forget(run, ev.task)
                if self.live <= self._refill_at:
                    self.fill(run)

        run.listen(on_event)
        self.fill(run)

    def _forget(self, run: Run, t: Task) -> None:
        if t.key not in self._referenced:
            run.forget(t)

    def fill(self, run: Run) -> None:
        # a cancelled run still takes the rest of its lines: each ends `cancelled` at
        # once and has its line in the output; an interrupted one leaves them for resume
        if run.interrupting or run.status != "running" or run.done:
            return
        if self.exhausted and not self._held:
            return
        try:
            more = self._take()
            if not more:
                return
            run.add(more)
        except Exception as exc:  # the first pass makes this unreachable; never lose it
            self.error = exc
            run.cancel(f"could not add lines to the run: {exc}")
            return
        mark, self._mark = self._mark, None
        if mark is not None and not self.by_line:
            # in the store with the tasks just added (the same journal batch): a resume
            # reads the input from this byte, not from the top (`resume_mark`)
            offset, t = mark
            run.ack(MARK_OFFSET, offset)
            run.ack(MARK_TASK, t.n)

    def _take(self) -> list[Task]:
        room = self.window - self.live
        out: list[Task] = []
        self._mark = None
        if self._held:
            out.extend(self._ready_held(room))
        while len(out) < room and not self.exhausted:
            t = next(self._tasks, None)
            if t is None:
                self.exhausted = True
                break
            if any(isinstance(d, str) and d not in self._admitted for d in t.depends_on):
                self._held.append(t)
                continue
            if not out and not self._held:
                at = getattr(self._tasks, "offset", -1)
                self._mark = (at, t) if at >= 0 else None
            self._admit(t, out)
            if self._held:
                out.extend(self._ready_held(room - len(out)))
        self.live += len(out)
        self.most_live = max(self.most_live, self.live)
        return out

    def _admit(self, t: Task, out: list[Task]) -> None:
        out.append(t)
        if t.key in self._referenced:
            self._admitted.add(t.key)

    def _ready_held(self, room: int) -> list[Task]:
        out: list[Task] = []
        progress = True
        while progress and self._held and len(out) < room:
            progress = False
            for t in list(self._held):
                if all(not isinstance(d, str) or d in self._admitted for d in t.depends_on):
                    self._held.remove(t)
                    self._admit(t, out)
                    progress = True
        return out
