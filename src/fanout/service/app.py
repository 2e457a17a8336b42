"""The HTTP service: `create_app` builds the FastAPI app of `fanout serve`.

The paths (docs/service.md has them with curl examples): `POST|GET /api/runs`,
`GET /api/runs/{id}` (+ `/results`, `/tasks`, `/tasks/{key}`, `/timeline`, `/events`),
`POST /api/runs/{id}/cancel|resume`, `POST /api/runs/{id}/tasks/{key}/cancel`,
`GET|PATCH /api/settings`, `GET /metrics`, `GET /healthz`, and the dashboard's static page
at `/`. Every one of them is behind the `Guard` (token, Host, Origin, body size).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from fanout.errors import FanoutError
from fanout.report.html import asset_text
from fanout.service import views
from fanout.service.guard import BodyTooLarge, Guard, host_names
from fanout.service.live import (
    Reader,
    change_settings,
    latest_sample,
    limiter_rows,
    settings_now,
)
from fanout.service.runs import Conflict, NotFound, RunManager, ServiceSettings
from fanout.service.sse import Feeds, stream

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD = 256 * 1024 * 1024
BREAKDOWN_EVERY_S = 5.0
#: the timeline renderer's files the dashboard loads from /static/
_TIMELINE_TYPES = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}


class Health(BaseModel):
    ok: bool = True


class RequestCounts(BaseModel):
    total: int
    completed: int
    failed: int
    skipped: int = 0
    cancelled: int = 0


class RunRow(BaseModel):
    id: str
    kind: str
    status: str = Field(description="OpenAI Batch vocabulary")
    fanout_status: str = Field(description="fanout's own: running, done, interrupted, ...")
    resumable: bool
    created_at: float
    finished_at: float | None
    request_counts: RequestCounts
    owner: str = Field(description="server: started here; other: another process's, read-only")


class RunList(BaseModel):
    runs: list[RunRow]


class RunRef(BaseModel):
    id: str
    status: str


class TaskCancelled(BaseModel):
    id: str
    key: str
    cancelled: bool


class CreateRun(BaseModel):
    """A JSON body for `POST /api/runs`: a batch from a path, or a canvas run."""

    input_path: str | None = None
    output: str | None = None
    order: str = "input"
    strict: bool = False
    max_line: str = "10MB"
    canvas: str | None = None
    agents: list[str] | str | None = None
    smart: bool | None = None
    yellow: str | None = None
    ids: list[str] | None = None
    group: str | None = None
    samples: int = 1
    aggregate: str = "individual"
    recolour: bool = False
    notes_dir: str | None = None
    node_colour: str = "5"
    restore_deleted: bool = False
    deadline_s: float | None = None
    max_cost_usd: float | None = None
    max_tokens: int | None = None


def create_app(
    settings: ServiceSettings,
    *,
    token: str,
    host: str = "127.0.0.1",
    allow_hosts: tuple[str, ...] = (),
    max_upload: int = DEFAULT_MAX_UPLOAD,
    on_ready: Any = None,
) -> Guard:
    """The service as an ASGI app (the FastAPI app behind its `Guard`). `on_ready(manager)`
    is called once the engine runs and the unfinished runs of an earlier server resumed."""
    manager = RunManager(settings)
    reader = Reader(settings.store_path)
    feeds = Feeds(reader)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        resumed = await manager.start()
        if on_ready is not None:
            on_ready(manager, resumed)
        try:
            yield
        finally:
            await manager.close()
            reader.close()

    app = FastAPI(
        title="fanout",
        summary="Run many LLM agent calls at once: runs, their events, results and limits.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.manager = manager

    @app.exception_handler(FanoutError)
    async def _fanout_error(_: Request, exc: FanoutError) -> JSONResponse:
        code = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, Conflict) else 422
        if type(exc).__name__ == "RunBusy":
            code = 409
        return JSONResponse({"detail": exc.message}, status_code=code)

    async def summary(run_id: str) -> dict[str, Any]:
        s = await reader.run(views.run_summary, run_id, manager.owned)
        if s is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return _known(s)

    def _known(s: dict[str, Any]) -> dict[str, Any]:
        """What this server knows better than the store: a run it runs is running (its
        lease may look stale while a loaded machine delays the heartbeat), or finalizing
        (ended, its output still being written)."""
        live = manager.live(s["id"])
        if live is None:
            return s
        s["live"] = True
        if manager.finalizing(s["id"]):
            s["status"] = "finalizing"
        elif s["fanout_status"] in ("running", "crashed"):
            s["fanout_status"], s["resumable"] = "running", False
            s["status"] = "cancelling" if live.cancelling else "in_progress"
        return s

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health()

    @app.get("/api/runs", response_model=RunList)
    async def list_runs(limit: Annotated[int, Query(ge=1, le=10_000)] = 200) -> Any:
        rows = await reader.run(views.list_runs, manager.owned, limit)
        return {"runs": [_known(r) for r in rows]}

    @app.post("/api/runs", status_code=201, response_model=RunRef)
    async def create_run(request: Request) -> Any:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            try:
                form = await request.form(max_files=1, max_fields=8)
            except BodyTooLarge:
                raise HTTPException(413, "the upload is too large") from None
            upload = form.get("input")
            if upload is None or isinstance(upload, str):
                raise HTTPException(422, "give the JSONL file as the multipart field 'input'")
            raw_opts = form.get("options")
            try:
                opts = json.loads(raw_opts) if isinstance(raw_opts, str) and raw_opts else {}
            except ValueError:
                raise HTTPException(422, "options: not JSON") from None
            if not isinstance(opts, dict):
                raise HTTPException(422, "options: give a JSON object")
            data = await upload.read()
            run_id = await manager.start_batch_upload(data, opts, upload.filename or "input.jsonl")
        else:
            try:
                raw = await request.body()
                body = CreateRun.model_validate_json(raw or b"{}")
            except BodyTooLarge:
                raise HTTPException(413, "the request is too large") from None
            except ValueError as exc:
                raise HTTPException(422, f"the JSON body: {_first_problem(exc)}") from None
            given = body.model_dump(exclude_unset=True)
            if body.canvas is not None:
                run_id = await manager.start_canvas(given)
            elif body.input_path is not None:
                run_id = await manager.start_batch_path(body.input_path, given)
            else:
                raise HTTPException(
                    422,
                    'give a JSONL upload (multipart field "input"), {"input_path": ...} or '
                    '{"canvas": ..., "agents": [...]}',
                )
        await durable(run_id)
        return {"id": run_id, "status": "in_progress"}

    async def durable(run_id: str) -> None:
        """Answer once the run is in the store (the journal commits it within
        milliseconds): a client's next request finds it."""
        for _ in range(2000):
            if await reader.run(views.run_summary, run_id) is not None:
                return
            await asyncio.sleep(0.005)

    @app.get("/api/runs/{run_id}")
    async def get_run(run_id: str) -> Any:
        d = await reader.run(views.run_detail, run_id, manager.owned)
        if d is None:
            raise HTTPException(404, f"no run {run_id!r}")
        _known(d)
        d["breakdown"] = await breakdown_of(run_id, d["fanout_status"] != "running")
        sample = await reader.run(latest_sample, run_id)
        if manager.live(run_id) is not None:
            engine = manager.engine
            lanes = engine.settings.lanes
            for row in d["lanes"]:
                row["limit"] = lanes.get(row["name"], engine.settings.concurrency)
            d["limiter"] = limiter_rows(engine, sample)
            metrics = manager.live(run_id).handle.launched.run.metrics()  # type: ignore[union-attr]
            d["cost_usd"] = metrics.get("cost_usd")
        return d

    breakdowns: dict[str, tuple[float, bool, dict[str, float]]] = {}

    async def breakdown_of(run_id: str, finished: bool) -> dict[str, float]:
        """A run's breakdown reads all its spans: a finished run's is kept, a running
        one's read again at most every `BREAKDOWN_EVERY_S` (a dashboard polls the status
        a few times a second)."""
        now = time.monotonic()
        kept = breakdowns.get(run_id)
        if kept is not None and (kept[1] or (not finished and now - kept[0] < BREAKDOWN_EVERY_S)):
            return kept[2]
        b = await reader.run(views.breakdown, run_id)
        if len(breakdowns) > 1000:
            breakdowns.clear()
        breakdowns[run_id] = (now, finished, b)
        return b

    @app.get("/api/runs/{run_id}/results")
    async def results(run_id: str) -> StreamingResponse:
        lines = await reader.run(lambda db: _listed(views.result_lines(db, run_id)))
        if lines is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return StreamingResponse(iter(lines), media_type="application/x-ndjson")

    @app.get("/api/runs/{run_id}/tasks")
    async def tasks(
        run_id: str,
        state: str | None = None,
        lane: str | None = None,
        agent: str | None = None,
        error: str | None = None,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> Any:
        page = await reader.run(
            views.task_rows,
            run_id,
            state=state,
            lane=lane,
            agent=agent,
            error=error,
            offset=offset,
            limit=limit,
        )
        if page is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return page

    @app.get("/api/runs/{run_id}/tasks/{key}")
    async def task(run_id: str, key: str) -> Any:
        d = await reader.run(views.task_detail, run_id, key)
        if d is None:
            raise HTTPException(404, f"no task {key!r} in run {run_id!r}")
        return d

    @app.get("/api/runs/{run_id}/timeline")
    async def timeline(run_id: str, t0: float | None = None, t1: float | None = None) -> Any:
        d = await reader.run(_timeline, run_id, t0, t1)
        if d is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return d

    @app.get("/api/runs/{run_id}/events")
    async def events(run_id: str, request: Request) -> StreamingResponse:
        await summary(run_id)
        after = views.parse_cursor(
            request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        )
        body = stream(
            feeds,
            run_id,
            after,
            busy=lambda rid: manager.live(rid) is not None,
            disconnected=request.is_disconnected,
        )
        return StreamingResponse(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.post("/api/runs/{run_id}/cancel", response_model=RunRef)
    async def cancel(run_id: str) -> Any:
        await summary(run_id)
        return {"id": run_id, "status": manager.cancel(run_id)}

    @app.post("/api/runs/{run_id}/tasks/{key}/cancel", response_model=TaskCancelled)
    async def cancel_task(run_id: str, key: str) -> Any:
        await summary(run_id)
        return {"id": run_id, "key": key, "cancelled": manager.cancel_task(run_id, key)}

    @app.post("/api/runs/{run_id}/resume", response_model=RunRef)
    async def resume(run_id: str) -> Any:
        s = await summary(run_id)
        if s["owner"] != "server":
            raise HTTPException(
                409, f"run {run_id} was started by another process: resume it with fanout resume"
            )
        if not s["resumable"]:
            raise HTTPException(409, f"run {run_id} is {s['fanout_status']}: nothing to resume")
        await manager.resume(run_id, s["kind"])
        await durable(run_id)
        return {"id": run_id, "status": "in_progress"}

    @app.get("/api/settings")
    async def get_settings() -> Any:
        return settings_now(manager.engine)

    @app.patch("/api/settings")
    async def patch_settings(request: Request) -> Any:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise HTTPException(422, "the JSON body: not JSON") from None
        if not isinstance(body, dict):
            raise HTTPException(422, "give a JSON object")
        return change_settings(manager.engine, body)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> str:
        rows = await reader.run(views.list_runs, manager.owned, 1000)
        return _prometheus(rows, manager)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/static/timeline.{ext}", include_in_schema=False)
    async def timeline_asset(ext: str) -> Response:
        # the dashboard's Gantt is drawn by the report's renderer: served from report/assets,
        # so there is one copy of it
        if ext not in _TIMELINE_TYPES:
            raise HTTPException(404, "no such file")
        return Response(asset_text(f"timeline.{ext}"), media_type=_TIMELINE_TYPES[ext])

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return Guard(
        app,
        token=token,
        hosts=host_names(host, allow_hosts),
        max_body=max_upload,
    )


def _listed(lines: Iterator[str] | None) -> list[str] | None:
    """Read whole on the reader thread: the connection is that thread's."""
    return None if lines is None else list(lines)


def _first_problem(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors(include_url=False)[0]
        loc = ".".join(str(x) for x in first.get("loc") or ())
        return f"{loc}: {first.get('msg')}" if loc else str(first.get("msg"))
    return str(exc)


def _timeline(db: Any, run_id: str, t0: float | None, t1: float | None) -> dict[str, Any] | None:
    from fanout.report.html import timeline_data
    from fanout.report.timeline import load_timeline

    tl = load_timeline(db, run_id)
    if tl is None:
        return None
    if t0 is not None or t1 is not None:
        lo = tl.origin + (t0 or 0.0)
        hi = tl.origin + t1 if t1 is not None else float("inf")
        tl.bars = [b for b in tl.bars if b.t1 >= lo and b.t0 <= hi]
        tl.waits = [w for w in tl.waits if w.t1 >= lo and w.t0 <= hi]
    return timeline_data(tl)


def _prometheus(rows: list[dict[str, Any]], manager: RunManager) -> str:
    from fanout.engine.metrics import peak_rss_mb

    out = [
        "# HELP fanout_runs Runs in the store by status (fanout's own vocabulary).",
        "# TYPE fanout_runs gauge",
    ]
    by_status: dict[str, int] = {}
    for r in rows:
        by_status[r["fanout_status"]] = by_status.get(r["fanout_status"], 0) + 1
    out += [f'fanout_runs{{status="{s}"}} {n}' for s, n in sorted(by_status.items())]
    out += ["# HELP fanout_run_tasks Tasks of the runs this server runs, by state.",
            "# TYPE fanout_run_tasks gauge"]  # fmt: skip
    for r in rows:
        if manager.live(r["id"]) is None:
            continue
        c = r["request_counts"]
        for state in ("total", "completed", "failed", "skipped", "cancelled"):
            out.append(f'fanout_run_tasks{{run="{r["id"]}",state="{state}"}} {c[state]}')
    engine = manager.engine
    inflight = sum(m.inflight for m in engine.provider_meters.values())
    out += [
        "# HELP fanout_in_flight Calls in flight in this server's engine.",
        "# TYPE fanout_in_flight gauge",
        f"fanout_in_flight {inflight}",
        "# HELP fanout_concurrency The engine's concurrency (workers).",
        "# TYPE fanout_concurrency gauge",
        f"fanout_concurrency {engine.settings.concurrency}",
        "# HELP fanout_peak_rss_mb The server process's peak resident memory.",
        "# TYPE fanout_peak_rss_mb gauge",
        f"fanout_peak_rss_mb {peak_rss_mb():.1f}",
    ]
    return "\n".join(out) + "\n"
