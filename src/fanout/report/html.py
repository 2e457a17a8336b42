"""`fanout report RUN --html FILE`: the timeline as one self-contained HTML file.

No network reference: the script and the style are inlined, the data is embedded as one
JSON block. The data is columnar and its times are integers (millionths of the run's
length), so a 100,000-task run stays a few MB. Beyond `MAX_BARS` attempts the Gantt is
aggregated here (per slot, per time bin, the lane that kept it busiest), beyond
`MAX_WAITS` waits (or more rows of them than slots) they are shown only as the "waiting"
chart, and long counter series are
binned (highest level per bin): the page then carries what a screen can show, not every
row. The script draws on canvases, with zoom (wheel, drag, double-click to reset) and a
hover card per attempt.
"""

from __future__ import annotations

import html
import json
from importlib.resources import files
from pathlib import Path
from typing import Any

from fanout.report.timeline import Bar, Timeline, binned_max, waiting_counts, waits_fit

#: attempts embedded one by one; a bigger run's Gantt is aggregated into bins
MAX_BARS = 150_000
#: waits drawn one by one; beyond, only the waiting-by-kind chart
MAX_WAITS = 30_000
#: a counter series longer than this is binned
MAX_POINTS = 3_000
#: the bins of an aggregated Gantt (per slot) and of a binned series
GANTT_BINS = 2_000
SERIES_BINS = 1_500
#: the integer time grid: times are stored as round(t / end * GRID)
GRID = 1_000_000


class _Index:
    """Strings stored once, referred to by position."""

    def __init__(self) -> None:
        self.items: list[str | None] = []
        self._pos: dict[str | None, int] = {}

    def __call__(self, s: str | None) -> int:
        if s not in self._pos:
            self._pos[s] = len(self.items)
            self.items.append(s)
        return self._pos[s]


def _series(points: list[tuple[float, float]], end: float) -> dict[str, Any]:
    """A step series for the page: exact change points when short, else binned maxima."""
    if len(points) <= MAX_POINTS:
        return {"t": [p[0] for p in points], "v": [p[1] for p in points], "binned": False}
    width = end / SERIES_BINS
    vals = binned_max(points, end, SERIES_BINS)
    return {"t": [i * width for i in range(SERIES_BINS)], "v": vals, "binned": True}


def _outcome(b: Bar) -> str:
    """done, running, or what went wrong: `transient: rate_limited`."""
    if b.error_class:
        return f"{b.error_class}: {b.error_kind}" if b.error_kind else b.error_class
    return b.outcome or "running"


def _bars(tl: Timeline, q: float, lanes: _Index) -> dict[str, Any]:
    if len(tl.bars) > MAX_BARS:
        return _aggregated(tl, q, lanes)
    keys, agents, outcomes = _Index(), _Index(), _Index()
    cols: dict[str, list[Any]] = {c: [] for c in ("s", "t0", "d", "l", "a", "k", "n", "o", "x")}
    for b in tl.bars:
        t0 = round(b.t0 / q)
        cols["s"].append(b.slot)
        cols["t0"].append(t0)
        cols["d"].append(max(round(b.t1 / q) - t0, 0))
        cols["l"].append(lanes(b.lane))
        cols["a"].append(agents(b.agent))
        cols["k"].append(keys(b.key))
        cols["n"].append(b.attempt)
        cols["o"].append(outcomes(_outcome(b)))
        cols["x"].append(b.tokens)
    if any(b.first_token is not None for b in tl.bars):
        # streamed attempts: when the first token came, from the attempt's start
        cols["f"] = [
            None if b.first_token is None else round((b.first_token - b.t0) / q) for b in tl.bars
        ]
    return {
        "aggregated": False,
        **cols,
        "keys": keys.items,
        "agents": agents.items,
        "outcomes": outcomes.items,
    }


def _aggregated(tl: Timeline, q: float, lanes: _Index) -> dict[str, Any]:
    """Per slot and time bin: the lane busiest in it and how many attempts touched it;
    neighbouring bins of one lane merge into one segment."""
    width = tl.end / GANTT_BINS or 1.0
    busy: dict[tuple[int, int], dict[str, float]] = {}
    touched: dict[tuple[int, int], int] = {}
    for b in tl.bars:
        lo, hi = int(b.t0 / width), min(int(b.t1 / width), GANTT_BINS - 1)
        for i in range(lo, hi + 1):
            overlap = min(b.t1, (i + 1) * width) - max(b.t0, i * width)
            cell = busy.setdefault((b.slot, i), {})
            cell[b.lane] = cell.get(b.lane, 0.0) + max(overlap, 0.0)
            touched[b.slot, i] = touched.get((b.slot, i), 0) + 1
    cols: dict[str, list[int]] = {c: [] for c in ("s", "t0", "d", "l", "c")}
    for slot, i in sorted(busy):
        lane = lanes(max(busy[slot, i].items(), key=lambda kv: kv[1])[0])
        t0 = round(i * width / q)
        same = cols["s"] and cols["s"][-1] == slot and cols["l"][-1] == lane
        if same and cols["t0"][-1] + cols["d"][-1] >= t0 - 1:  # adjacent: extend
            cols["d"][-1] = round((i + 1) * width / q) - cols["t0"][-1]
            cols["c"][-1] += touched[slot, i]
            continue
        cols["s"].append(slot)
        cols["t0"].append(t0)
        cols["d"].append(round((i + 1) * width / q) - t0)
        cols["l"].append(lane)
        cols["c"].append(touched[slot, i])
    return {"aggregated": True, **cols}


def timeline_data(tl: Timeline) -> dict[str, Any]:
    """What the page's script reads: compact, columnar, integer times (see GRID)."""
    end = tl.end if tl.end > 0 else 1.0
    q = end / GRID
    lanes = _Index()
    for lane in tl.lanes:
        lanes(lane)
    data: dict[str, Any] = {
        "run": tl.run_id,
        "kind": tl.kind,
        "origin": tl.origin,
        "end": end,
        "q": q,
        "slots": tl.slots,
        "attempts": len(tl.bars),
        "has_spans": tl.has_spans,
        "bars": _bars(tl, q, lanes),
        "lanes": lanes.items,
    }
    kinds = _Index()
    if waits_fit(tl, MAX_WAITS):
        data["waits"] = {
            "r": [w.row for w in tl.waits],
            "t0": [round(w.t0 / q) for w in tl.waits],
            "d": [round((w.t1 - w.t0) / q) for w in tl.waits],
            "k": [kinds(w.kind) for w in tl.waits],
            "rows": tl.wait_rows,
        }
    elif tl.waits:
        data["waits_note"] = (
            f"more than {MAX_WAITS:,} to draw one by one"
            if len(tl.waits) > MAX_WAITS
            else "more at once than the Gantt has rows"
        )
    data["wait_kinds"] = kinds.items
    data["waits_total"] = len(tl.waits)
    series: dict[str, Any] = {"in flight": _series([(t, float(v)) for t, v in tl.in_flight], end)}
    for name in ("limit_now", "rpm_used", "tpm_used"):
        pts = [(s.t, float(v)) for s in tl.samples if (v := getattr(s, name)) is not None]
        if pts:
            series[name] = _series(pts, end)
    data["series"] = series
    data["waiting"] = {
        k: _series([(t, float(v)) for t, v in pts], end) for k, pts in waiting_counts(tl).items()
    }
    return data


def asset_text(name: str) -> str:
    """One of the timeline renderer's files (`timeline.js`, `timeline.css`): the report page
    inlines them, the service's dashboard serves the same files."""
    return files("fanout.report").joinpath("assets", name).read_text(encoding="utf-8")


def render_html(tl: Timeline) -> str:
    script = asset_text("timeline.js")
    style = asset_text("timeline.css") + asset_text("page.css")
    blob = json.dumps(timeline_data(tl), ensure_ascii=False, separators=(",", ":"))
    # inside <script>, "</" could close the element early: JSON allows "<\/" for it
    blob = blob.replace("</", "<\\/")
    title = html.escape(f"fanout run {tl.run_id}")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{style}</style></head><body>"
        f"<h1>{title} <small>({html.escape(tl.kind)})</small></h1>"
        '<div id="timeline"></div>'
        f'<script id="data" type="application/json">{blob}</script>'
        f"<script>{script}</script><script>{_BOOT}</script></body></html>\n"
    )


#: the page's own script: mount the shared renderer on the embedded data; `#check` makes it
#: exercise itself (hover, zoom) for a headless browser
_BOOT = (
    "const tl = FanoutTimeline.mount(document.getElementById('timeline'), "
    "JSON.parse(document.getElementById('data').textContent), {stamp: document.body});"
    "if (location.hash === '#check') tl.selfCheck();"
)


def write_html(tl: Timeline, path: Path) -> int:
    """Write the page to `path`; returns its size in bytes."""
    text = render_html(tl).encode("utf-8")
    path.write_bytes(text)
    return len(text)
