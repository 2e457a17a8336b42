"""JSONL batches out: one output line per input line, written whole by rename.

Output lines mirror OpenAI's batch output: {"id", "custom_id", "response": {"status_code",
"request_id", "body"}, "error"}; exactly one per input line, failures included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from fanout.batch.parse import Batch, LineError
from fanout.errors import ConfigError, FanoutError, InputError
from fanout.tasks import Result

if TYPE_CHECKING:
    from fanout.batch.stream import Feed
    from fanout.engine.events import Event
    from fanout.engine.run import Run

Order = Literal["input", "completion"]
ORDERS: tuple[Order, ...] = get_args(Order)


def parse_order(value: str) -> Order:
    """`value` as an output `Order`; `ConfigError` naming the allowed values."""
    for order in ORDERS:
        if value == order:
            return order
    raise ConfigError(f"--order {value!r}: use 'input' or 'completion'")


def output_line(item: Result | LineError, created: int | None = None) -> dict[str, Any]:
    """The OpenAI-batch-style output object for one input line."""
    if isinstance(item, LineError):
        return {
            "id": f"batch_req_line{item.line}",
            "custom_id": item.custom_id,
            "response": None,
            "error": {"code": "invalid_line", "message": str(item)},
        }
    r = item
    t = r.task
    cid = (t.meta or {}).get("custom_id", t.key)
    rid = f"batch_req_{t.id}"
    if r.ok:
        body = {
            "id": f"chatcmpl-{t.id}",
            "object": "chat.completion",
            "created": created if created is not None else int(time.time()),
            "model": r.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": r.text},
                    "finish_reason": r.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": r.input_tokens,
                "completion_tokens": r.output_tokens,
                "total_tokens": r.input_tokens + r.output_tokens,
            },
        }
        return {
            "id": rid,
            "custom_id": cid,
            "response": {"status_code": 200, "request_id": t.id, "body": body},
            "error": None,
        }
    err = r.error
    error = {
        "code": err.kind if err else str(r.state),
        "message": err.message if err else str(r.state),
        "class": err.error_class if err else None,
        "state": str(r.state),
        "attempts": r.attempts,
    }
    response = None
    if err is not None and err.status is not None:
        response = {
            "status_code": err.status,
            "request_id": t.id,
            "body": {"error": {"message": err.message, "type": err.kind}},
        }
    return {"id": rid, "custom_id": cid, "response": response, "error": error}


class AtomicJsonlWriter:
    """Lines go to a temp file beside the target; `commit()` fsyncs and renames it into
    place, so a reader sees the old file or the whole new one, never half of one."""

    def __init__(self, target: str | os.PathLike[str]) -> None:
        self.target = Path(target)
        parent = self.target.parent
        if not parent.is_dir():
            raise InputError(f"{self.target}: the folder {parent} does not exist")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".tmp", dir=parent)
        self._tmp = Path(tmp)
        self._f = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        self.lines = 0
        #: the first OS error a write met (a full disk, a file size limit): lines written
        #: as results arrive are written from the run's event listener, which must not
        #: raise into the engine, so the error waits here for `commit` to report it
        self.failed: OSError | None = None

    def write(self, obj: Mapping[str, Any]) -> None:
        if self.failed is not None:
            return
        try:
            self._f.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
        except OSError as exc:
            self.failed = exc
            return
        self.lines += 1

    def commit(self) -> None:
        if self.failed is not None:
            raise self.failed
        self._f.flush()
        # the temp file was made private (0600): give the output the mode a file made with
        # open() would have, or keep the one the file it replaces had
        try:
            mode = self.target.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        os.fchmod(self._f.fileno(), mode)
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self._tmp, self.target)
        dfd = os.open(self.target.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def abort(self) -> None:
        if not self._f.closed:
            # what is buffered may not fit either (a full disk): the file goes anyway
            with contextlib.suppress(OSError):
                self._f.close()
        self._tmp.unlink(missing_ok=True)


def check_output_path(path: str | os.PathLike[str], input_path: str | os.PathLike[str]) -> Path:
    """Refuse an output path that would overwrite the input or is a folder."""
    out = Path(path)
    if out.is_dir():
        raise InputError(f"-o {out}: is a folder; give a file name such as {out / 'results.jsonl'}")
    if out.exists() and Path(input_path).exists() and out.resolve() == Path(input_path).resolve():
        raise InputError(f"-o {out}: is the input file; write the results to another file")
    if not out.parent.is_dir():
        raise InputError(f"-o {out}: the folder {out.parent} does not exist")
    # the file is written at the end, by a temp file renamed into place: find out now, before
    # a single call is paid for, that the folder takes one (permissions, read-only mounts)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".check", dir=out.parent)
    except OSError as exc:
        raise InputError(
            f"-o {out}: cannot write in {out.parent} ({exc.strerror}); choose another folder"
        ) from None
    os.close(fd)
    os.unlink(tmp)
    return out


class BatchSink:
    """Writes a batch's output file from its run: one line per input line, refused lines
    included. In completion order each line is written as its task's result becomes durable
    (it listens to the run's events, synchronously, so it misses none; a resumed run's
    earlier results are written as it attaches); in input order the file is written from
    the store at the end. Either way the file appears whole, by rename, and only when the
    run has ended: an interrupted run leaves no file (`finish` returns None).
    """

    name = "batch-jsonl"

    def __init__(
        self,
        batch: Batch,
        target: str | os.PathLike[str],
        order: Order,
        *,
        feed: Feed | None = None,
        store_path: Path | None = None,
    ) -> None:
        """With `feed`, the batch is streamed: `batch` holds only its refused lines, the
        feed adds its tasks to the run, and the input-order file is written from the
        store at `store_path` (None: the default store)."""
        self.batch = batch
        self.feed = feed
        self.store_path = store_path
        self.order = parse_order(order)
        self.writer = AtomicJsonlWriter(target)
        self._created = int(time.time())
        if order == "completion":
            for e in batch.errors:
                self.writer.write(output_line(e, self._created))

    @property
    def target(self) -> Path:
        return self.writer.target

    def line(self, result: Result) -> dict[str, Any]:
        """The output line of `result`."""
        return output_line(result, self._created)

    def attach(self, run: Run) -> None:
        from fanout.engine.events import TaskFinished

        if self.order == "completion":
            if self.feed is not None and run.resumed:
                self._write_earlier(run)
            for t in run.tasks:  # a resumed run: what earlier segments finished
                r = run.result(t) if t is not None else None
                if r is not None and r.state.terminal:
                    self.writer.write(self.line(r))

            def on_event(ev: Event) -> None:
                if isinstance(ev, TaskFinished):
                    self.writer.write(self.line(ev.result))

            run.listen(on_event)
        if self.feed is not None:  # after the writer: it reads each result before it goes
            self.feed.attach(run)

    async def finish(self, run: Run) -> int | None:
        """Write what is left, put the file in place; returns the number of lines (None,
        and no file, for an interrupted run)."""
        if run.status == "interrupted":
            self.writer.abort()
            return None
        try:
            if self.feed is not None and self.feed.error is not None:
                raise self.feed.error
            if self.order == "input" and self.feed is not None:
                await asyncio.to_thread(self._write_from_store, run.id)
            elif self.order == "input":
                results = {r.task.n: r for r in await run.results()}
                for item in self.batch.slots():
                    if isinstance(item, LineError):
                        self.writer.write(output_line(item, self._created))
                    else:
                        r = results.get(item.n)
                        if r is not None:
                            self.writer.write(output_line(r, self._created))
            self.writer.commit()
        except OSError as exc:
            self.writer.abort()
            raise FanoutError(
                f"could not write {self.target}: {exc.strerror or exc}; the file was left as"
                f" it was and the results are kept: fanout results {run.id} -o FILE",
                run_id=run.id,
            ) from None
        except BaseException:
            self.writer.abort()
            raise
        run.ack(self.name, self.writer.lines)
        return self.writer.lines

    def abort(self) -> None:
        self.writer.abort()

    def _write_earlier(self, run: Run) -> None:
        """A resumed streamed run: the results of earlier segments that the run did not
        load (a lean resume leaves their slots empty), read from the store."""
        from fanout.store import queries
        from fanout.store.sqlite import opened

        slots = run.tasks
        with opened(self.store_path) as db:
            for r in queries.iter_results(db, run.id):
                n = r.task.n
                if n < len(slots) and slots[n] is None:
                    self.writer.write(self.line(r))

    def _write_from_store(self, run_id: str) -> None:
        from fanout.store.sqlite import opened

        assert self.feed is not None
        with opened(self.store_path) as db:
            write_in_input_order(
                self.writer, db, run_id, self.batch.errors, self.feed.by_line, self._created
            )


def write_in_input_order(
    writer: AtomicJsonlWriter,
    db: sqlite3.Connection,
    run_id: str,
    errors: list[LineError],
    by_line: bool,
    created: int | None = None,
) -> None:
    """Every line of a batch run in input order: the refused ones (`errors`, in line
    order) and the stored results, read one at a time (a streamed run keeps none of them
    in memory); a line with no result yet is left out."""
    from fanout.store import queries

    pending_errors = iter(errors)
    pending = next(pending_errors, None)
    write = writer.write
    for r in queries.iter_results(db, run_id, by_line=by_line):
        line = int((r.task.meta or {}).get("line", 0))
        while pending is not None and pending.line < line:
            write(output_line(pending, created))
            pending = next(pending_errors, None)
        write(output_line(r, created))
    while pending is not None:
        write(output_line(pending, created))
        pending = next(pending_errors, None)


def _umask() -> int:
    """The process's umask (it can only be read by setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
