"""The runs a server starts: one `Engine` for all of them, the same applications as the CLI.

A batch (an uploaded JSONL file or a path under the root) goes through `batch.run`'s
`plan_batch` / `start_batch`, a canvas through `canvas.run`'s `plan_run` / `start_canvas`:
the same checks and the same one-line messages as `fanout batch` and `fanout canvas run`,
and results equal to theirs. Every run joins the server's one engine, so the runs share its
workers and its providers' limits (one account), and the engine's SQLite store is the one
the CLI uses: `fanout runs` sees the server's runs and the server sees the CLI's.

The server keeps the ids of the runs it started in a small file beside the store
(`service-runs.json`): after a crash (or a stop), the next server started on that store
resumes those of them that did not finish. Nothing finished is sent again: the engine's
resume keeps every stored result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fanout import launch
from fanout.batch.output import parse_order
from fanout.batch.parse import parse_size
from fanout.batch.run import BatchRun, plan_batch, resume_batch, start_batch
from fanout.canvas.aggregate import parse_mode
from fanout.canvas.io import check_canvas_path
from fanout.canvas.run import CanvasChoice, CanvasRun, plan_run, resume_canvas, start_canvas
from fanout.engine.engine import Engine
from fanout.errors import ConfigError, FanoutError
from fanout.launch import EngineChoice, RunOptions, Setup

OWNED_FILE = "service-runs.json"
UPLOADS = "service-uploads"


class NotFound(FanoutError):
    """No such run (404)."""


class Conflict(FanoutError):
    """The request does not fit the run's state (409): read-only, still running, ..."""


@dataclass(slots=True, kw_only=True)
class ServiceSettings:
    """What `fanout serve` was started with."""

    root: Path
    store_path: Path
    choice: EngineChoice = field(default_factory=EngineChoice)
    cache: bool = True
    grace_s: float = 5.0

    def __post_init__(self) -> None:
        self.root = Path(os.path.realpath(self.root))


def under_root(root: Path, raw: str, what: str) -> Path:
    """`raw` (absolute, or relative to the root) as an absolute path, if it lies under the
    root once every `..` and symbolic link is followed; else `ConfigError`. The path keeps
    its links (a canvas reached by a link inside the root has its vault where the link is)."""
    if not raw or "\x00" in raw:
        raise ConfigError(f"{what}: give a path under {root}")
    p = Path(raw)
    p = p if p.is_absolute() else root / p
    real = Path(os.path.realpath(p))
    if real != root and root not in real.parents:
        raise ConfigError(
            f"{what} {raw!r} is outside the folder this server may read and write ({root}); "
            "give a path under it (start the server with --root to change it)"
        )
    return Path(os.path.abspath(p))


class Live:
    """A run this server is running: its handle until `finish` returns."""

    def __init__(self, handle: BatchRun | CanvasRun) -> None:
        self.handle = handle
        self.finishing: asyncio.Task[Any] | None = None
        self.cancelling = False

    @property
    def run_id(self) -> str:
        return self.handle.launched.run_id


class RunManager:
    """Starts, cancels and resumes the server's runs on its one engine."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.options = RunOptions(
            choice=settings.choice, cache=settings.cache, grace_s=settings.grace_s
        )
        self._setup: Setup | None = None
        self._engine: Engine | None = None
        self._live: dict[str, Live] = {}
        self._owned_path = settings.store_path.parent / OWNED_FILE
        self._owned_ids: set[str] | None = None
        self._uploads = settings.store_path.parent / UPLOADS

    # -- the engine ----------------------------------------------------------------------

    async def start(self) -> list[str]:
        """Build the engine and resume the runs an earlier server left unfinished; returns
        their ids."""
        self._setup = launch.engine_setup(self.options.choice)
        self._engine = launch.shared_engine(self._setup, self.options, self.settings.store_path)
        await self._engine.start()
        return await self._resume_owned()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise FanoutError("the server's engine is not running")
        return self._engine

    @property
    def setup(self) -> Setup:
        if self._setup is None:
            raise FanoutError("the server's engine is not running")
        return self._setup

    @property
    def owned(self) -> frozenset[str]:
        """The ids of the runs servers on this store started (read-write here)."""
        if self._owned_ids is None:
            self._owned_ids = set(self._owned())
        return frozenset(self._owned_ids)

    @property
    def note(self) -> str | None:
        return None if self._setup is None else self._setup.note

    async def close(self) -> None:
        """Stop: the runs still going are interrupted (calls in flight get the grace
        period) and stay resumable; the next server resumes them."""
        for live in list(self._live.values()):
            live.handle.launched.interrupt()
        for live in list(self._live.values()):
            if live.finishing is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await live.finishing
        if self._engine is not None:
            await self._engine.aclose()

    def live(self, run_id: str) -> Live | None:
        return self._live.get(run_id)

    def finalizing(self, run_id: str) -> bool:
        """The run has ended but its output is still being written."""
        live = self._live.get(run_id)
        return live is not None and live.handle.launched.run.done

    # -- starting runs -------------------------------------------------------------------

    async def start_batch_upload(
        self, data: bytes, opts: Mapping[str, Any], name: str = "input.jsonl"
    ) -> str:
        """A batch from an uploaded JSONL file: kept beside the store (the run's input, as
        the CLI keeps the path it was given), its output written there unless `output`."""
        folder = self._uploads / secrets.token_hex(8)
        folder.mkdir(parents=True, exist_ok=True)
        src = folder / "input.jsonl"
        src.write_bytes(data)
        try:
            return await self._start_batch(src, folder / "output.jsonl", opts)
        except FanoutError as exc:  # named as the user knows it: the upload, not our copy
            exc.message = exc.message.replace(str(src), f"the upload {name!r}")
            self._discard(folder)
            raise
        except BaseException:
            self._discard(folder)
            raise

    @staticmethod
    def _discard(folder: Path) -> None:
        for p in (folder / "input.jsonl", folder / "output.jsonl"):
            p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()

    async def start_batch_path(self, raw: str, opts: Mapping[str, Any]) -> str:
        src = under_root(self.settings.root, raw, "input_path")
        folder = self._uploads / secrets.token_hex(8)
        default_out = folder / "output.jsonl"
        try:
            if not opts.get("output"):
                folder.mkdir(parents=True, exist_ok=True)
            return await self._start_batch(src, default_out, opts)
        except BaseException:
            with contextlib.suppress(OSError):
                folder.rmdir()
            raise

    async def _start_batch(self, src: Path, default_out: Path, opts: Mapping[str, Any]) -> str:
        out = default_out
        if opts.get("output"):
            out = under_root(self.settings.root, str(opts["output"]), "output")
        options = self._run_options(opts)
        order = parse_order(str(opts.get("order", "input")))
        max_line = parse_size("max_line", str(opts.get("max_line", "10MB")))
        plan = await asyncio.to_thread(
            plan_batch, src, out, order, options, max_line_bytes=max_line, setup=self.setup
        )
        if plan.batch.errors and opts.get("strict"):
            first = plan.batch.errors[0]
            raise ConfigError(
                f"{len(plan.batch.errors)} bad line(s), the first: {first}; nothing was run "
                "(strict)"
            )
        handle = await start_batch(plan, options, engine=self.engine)
        return self._adopt(handle)

    async def start_canvas(self, body: Mapping[str, Any]) -> str:
        path = under_root(self.settings.root, str(body.get("canvas") or ""), "canvas")
        check_canvas_path(path)
        agents = body.get("agents")
        if isinstance(agents, str):
            agents = [a.strip() for a in agents.split(",") if a.strip()]
        if agents is not None and not (
            isinstance(agents, list) and all(isinstance(a, str) for a in agents)
        ):
            raise ConfigError('agents: give a list of agent names, e.g. ["oral-explanation"]')
        ids = body.get("ids")
        choice = CanvasChoice(
            path=str(path),
            agents=agents or None,
            smart=body.get("smart"),
            colour=body.get("yellow"),
            ids=list(ids) if ids else None,
            group=body.get("group"),
            samples=int(body.get("samples", 1)),
            mode=parse_mode(str(body.get("aggregate", "individual"))),
            recolour=bool(body.get("recolour", False)),
            notes_dir=body.get("notes_dir"),
            node_colour=str(body.get("node_colour", "5")),
            restore_deleted=bool(body.get("restore_deleted", False)),
        )
        options = self._run_options(body)
        plan = await asyncio.to_thread(plan_run, choice, options, self.setup)
        self._check_notes_folder(plan.job.path, choice.notes_dir)
        handle = await start_canvas(plan, options, engine=self.engine)
        return self._adopt(handle)

    def _check_notes_folder(self, canvas: Path, notes_dir: str | None) -> None:
        from fanout.canvas.merge import notes_folder
        from fanout.canvas.vault import find_vault_root

        folder = notes_folder(canvas, find_vault_root(canvas), notes_dir)
        under_root(self.settings.root, str(folder), "the notes folder")

    def _run_options(self, opts: Mapping[str, Any]) -> RunOptions:
        """The server's options with what a request may set for its own run: caps and a
        deadline (the engine, its provider and cache are the server's)."""

        def num(name: str) -> float | None:
            v = opts.get(name)
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ConfigError(f"{name}: give a number, not {v!r}")
            return float(v)

        max_tokens = num("max_tokens")
        return RunOptions(
            choice=self.options.choice,
            cache=self.options.cache,
            grace_s=self.options.grace_s,
            deadline_s=num("deadline_s"),
            max_cost_usd=num("max_cost_usd"),
            max_tokens=None if max_tokens is None else int(max_tokens),
        )

    def _adopt(self, handle: BatchRun | CanvasRun) -> str:
        live = Live(handle)
        self._live[live.run_id] = live
        self._remember(live.run_id)
        live.finishing = asyncio.ensure_future(self._finish(live))
        return live.run_id

    async def _finish(self, live: Live) -> None:
        try:
            await live.handle.finish()
        finally:
            self._live.pop(live.run_id, None)
            self.engine.forget(live.handle.launched.run)  # the store keeps it

    # -- acting on runs ------------------------------------------------------------------

    def cancel(self, run_id: str) -> str:
        """Cancel a run this server runs; "cancelling" (its calls in flight are stopped)."""
        live = self._live.get(run_id)
        if live is None:
            raise Conflict(
                f"run {run_id} is not running in this server (see its status); a run of "
                f"another process is read-only here: fanout cancel {run_id}"
            )
        live.cancelling = True
        live.handle.launched.run.cancel("cancelled through the service")
        return "cancelling"

    def cancel_task(self, run_id: str, key: str) -> bool:
        live = self._live.get(run_id)
        if live is None:
            raise Conflict(f"run {run_id} is not running in this server")
        try:
            return live.handle.launched.run.cancel_task(key, "cancelled through the service")
        except (KeyError, FanoutError) as exc:
            raise NotFound(f"run {run_id} has no task {key!r}") from exc

    async def resume(self, run_id: str, kind: str) -> str:
        if run_id in self._live:
            raise Conflict(f"run {run_id} is running in this server already")
        handle: BatchRun | CanvasRun
        if kind == "batch":
            handle = await resume_batch(run_id, engine=self.engine)
        elif kind == "canvas":
            handle = await resume_canvas(run_id, engine=self.engine)
        else:
            raise Conflict(f"run {run_id} is a {kind!r} run: resume it from Python")
        return self._adopt(handle)

    # -- the runs an earlier server left ----------------------------------------------------

    def _owned(self) -> list[str]:
        try:
            data = json.loads(self._owned_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return [str(x) for x in data] if isinstance(data, list) else []

    def _remember(self, run_id: str) -> None:
        ids = self._owned()
        if self._owned_ids is not None:
            self._owned_ids.add(run_id)
        if run_id in ids:
            return
        ids.append(run_id)
        tmp = self._owned_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(ids[-10_000:]), encoding="utf-8")
        os.replace(tmp, self._owned_path)

    async def _resume_owned(self) -> list[str]:
        from fanout.store.overview import display_status

        resumed: list[str] = []
        store = self.engine.store
        for run_id in self._owned():
            snap = await store.snapshot(run_id)
            if snap is None:
                continue
            status = display_status(snap.status, snap.lease)
            if status not in ("crashed", "interrupted"):
                continue
            try:
                await self.resume(run_id, snap.kind)
            except FanoutError:
                continue  # another process took it, or its input changed: left as it is
            resumed.append(run_id)
        return resumed
