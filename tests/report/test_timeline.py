"""The timeline model and its trace, PNG and HTML, from real runs' stores."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout.report.html import MAX_WAITS, render_html, timeline_data
from fanout.report.pictures import write_pictures
from fanout.report.timeline import Timeline, load_timeline, pack, step_counts
from fanout.report.trace import render_trace
from fanout.store.sqlite import connect
from tests.report.runs import LANES, add_spans, real_run


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("timeline") / "运行.db"
    return path, real_run(path)


@contextlib.contextmanager
def db_of(path: Path) -> Iterator[sqlite3.Connection]:
    db = connect(path)
    try:
        yield db
    finally:
        db.close()


def attempts_of(db: sqlite3.Connection, run_id: str) -> set[tuple[int, int]]:
    rows = db.execute(
        "SELECT n, attempt FROM attempts JOIN runs USING (rid) WHERE runs.id = ?", (run_id,)
    )
    return {(int(n), int(a)) for n, a in rows}


def test_pack_never_overlaps_and_uses_the_fewest_rows() -> None:
    iv = [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0), (2.5, 2.6), (3.0, 5.0), (0.5, 0.6)]
    rows, count = pack(iv)
    assert count == max(c for _, c in step_counts(iv)) == 3
    for r in range(count):
        mine = sorted(i for i, row in zip(iv, rows, strict=True) if row == r)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(mine))


def test_a_run_without_spans_gives_every_attempt_on_a_slot(
    store: tuple[Path, str], tmp_path: Path
) -> None:
    """A store from before the spans tables: the attempts alone."""
    path, run_id = store
    copy = tmp_path / "旧.db"
    with db_of(path) as src, contextlib.closing(sqlite3.connect(copy)) as dst:
        src.backup(dst)
    with db_of(copy) as db:
        db.execute("DROP TABLE IF EXISTS spans")
        db.execute("DROP TABLE IF EXISTS samples")
        tl = load_timeline(db, run_id)
        stored = attempts_of(db, run_id)
    assert tl is not None
    assert {(b.n, b.attempt) for b in tl.bars} == stored
    assert any(b.attempt > 1 for b in tl.bars), "the injected faults should have caused retries"
    assert {b.error_kind for b in tl.bars} >= {"rate_limited", "server_error"}
    assert set(tl.lanes) == {*LANES, "default"}  # the merges run in the default lane
    assert {"摘要", "outline"} <= set(tl.agents)
    assert {b.key for b in tl.bars} >= {"第0章", "合并-1", "合并-2"}
    # the slots: no overlap in any, and no more of them than the concurrency
    assert tl.slots <= 5
    for s in range(tl.slots):
        mine = sorted((b.t0, b.t1) for b in tl.bars if b.slot == s)
        assert all(a[1] <= b[0] + 1e-9 for a, b in itertools.pairwise(mine))
    assert max(v for _, v in tl.in_flight) == tl.slots
    assert not tl.has_spans
    assert tl.waits == []
    assert tl.samples == []
    # 2 merges x 12 parts each
    assert len(tl.deps) == 24


def test_the_engine_s_own_spans_become_waits(store: tuple[Path, str]) -> None:
    """The store's spans as the engine writes them: the dependency layer waited (`deps`)."""
    path, run_id = store
    with db_of(path) as db:
        tl = load_timeline(db, run_id)
    assert tl is not None
    assert tl.has_spans
    assert "deps" in {w.kind for w in tl.waits}
    assert tl.samples


def with_spans(store: tuple[Path, str], tmp_path: Path) -> tuple[Path, str, dict[str, int]]:
    path, run_id = store
    copy = tmp_path / "副本.db"
    with db_of(path) as src, contextlib.closing(sqlite3.connect(copy)) as dst:
        src.backup(dst)
    with db_of(copy) as db:
        counts = add_spans(db, run_id)
    return copy, run_id, counts


def test_spans_and_samples_become_waits_and_series(store: tuple[Path, str], tmp_path: Path) -> None:
    path, run_id, counts = with_spans(store, tmp_path)
    with db_of(path) as db:
        tl = load_timeline(db, run_id)
    assert tl is not None
    assert tl.has_spans
    got: dict[str, int] = {}
    for w in tl.waits:
        got[w.kind] = got.get(w.kind, 0) + 1
    assert got == counts
    assert counts.get("backoff")
    # waits are packed too: none overlap on a row
    for r in range(tl.wait_rows):
        mine = sorted((w.t0, w.t1) for w in tl.waits if w.row == r)
        assert all(a[1] <= b[0] + 1e-9 for a, b in itertools.pairwise(mine))
    assert tl.samples
    assert all(s.limit_now == 5 for s in tl.samples)
    data = timeline_data(tl)
    assert set(data["waiting"]) == set(counts)
    assert {"in flight", "limit_now", "rpm_used", "tpm_used"} <= set(data["series"])


def test_trace_has_one_complete_event_per_stored_attempt(
    store: tuple[Path, str], tmp_path: Path
) -> None:
    path, run_id, counts = with_spans(store, tmp_path)
    with db_of(path) as db:
        tl = load_timeline(db, run_id)
        stored = attempts_of(db, run_id)
    assert tl is not None
    doc = json.loads(render_trace(tl))
    events = doc["traceEvents"]
    xs = [e for e in events if e["ph"] == "X" and e["pid"] == 1]
    assert sorted((e["args"]["task"], e["args"]["attempt"]) for e in xs) == sorted(stored)
    for e in xs:  # each on its slot's track, none overlapping there
        assert 0 <= e["tid"] < tl.slots
        assert e["dur"] >= 0
    waits = [e for e in events if e["ph"] == "X" and e["cat"] == "wait"]
    assert len(waits) == sum(counts.values())
    counters = {e["name"] for e in events if e["ph"] == "C"}
    assert counters == {"in flight", "concurrency limit", "RPM used", "TPM used"}
    starts = [e for e in events if e["ph"] == "s"]
    ends = [e for e in events if e["ph"] == "f"]
    assert len(starts) == len(ends) == 24
    assert {e["id"] for e in starts} == {e["id"] for e in ends}
    # each arrow starts inside a slice of its track and ends at the start of one
    for e in starts:
        assert any(x["tid"] == e["tid"] and x["ts"] <= e["ts"] < x["ts"] + x["dur"] for x in xs), e
    for e in ends:
        assert any(x["tid"] == e["tid"] and x["ts"] == e["ts"] for x in xs), e


def test_html_is_self_contained_and_carries_every_attempt(store: tuple[Path, str]) -> None:
    path, run_id = store
    with db_of(path) as db:
        tl = load_timeline(db, run_id)
    assert tl is not None
    page = render_html(tl)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "http://" not in page
    assert "https://" not in page
    blob = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S)
    assert blob is not None
    data = json.loads(blob.group(1))
    assert len(data["bars"]["s"]) == len(tl.bars) == data["attempts"]
    assert "第0章" in data["bars"]["keys"]
    assert "慢车道" in data["lanes"]


def test_a_key_that_would_close_the_script_stays_inside_it(tmp_path: Path) -> None:
    from fanout.report.timeline import Bar

    bar = Bar(0, 0.0, 1.0, 0, 1, "default", "-", "</script><b>x", "done", None, 3)
    page = render_html(Timeline("r-x", "batch", 0.0, 1.0, 1, [bar]))
    blob = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S)
    assert blob is not None
    assert json.loads(blob.group(1))["bars"]["keys"] == ["</script><b>x"]


def test_too_many_waits_are_left_to_the_waiting_chart() -> None:
    from fanout.report.timeline import Wait

    waits = [Wait(i % 7, i * 0.001, i * 0.001 + 0.01, i, "queued") for i in range(MAX_WAITS + 1)]
    tl = Timeline("r-w", "batch", 0.0, 40.0, 0, [], waits=waits, wait_rows=7, has_spans=True)
    data = timeline_data(tl)
    assert "waits" not in data
    assert data["waits_note"] == f"more than {MAX_WAITS:,} to draw one by one"
    assert data["waiting"]["queued"]["binned"]
    assert max(data["waiting"]["queued"]["v"]) >= 10


def test_png_is_1600_px_wide_and_shows_the_gantt(store: tuple[Path, str], tmp_path: Path) -> None:
    from matplotlib import image

    path, run_id = store
    with db_of(path) as db:
        tl = load_timeline(db, run_id)
    assert tl is not None
    out = tmp_path / "时间线.png"
    write_pictures(tl, png=out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    px = image.imread(out)
    assert px.shape[1] == 1600
    assert px.shape[0] >= 400
    # the lanes' colours fill part of the upper half (the Gantt, slots and waits), none of
    # the image's edge
    top = px[: px.shape[0] // 2, :, :3]
    lane0 = (0x4E / 255, 0x79 / 255, 0xA7 / 255)
    lane1 = (0xF2 / 255, 0x8E / 255, 0x2B / 255)
    for colour in (lane0, lane1):
        near = (abs(top - colour) < 0.02).all(axis=2)
        assert near.sum() > 300, f"too few pixels of lane colour {colour}"
    assert not (abs(px[:, :3, :3] - lane0) < 0.02).all(axis=2).any()


def test_png_renders_the_chinese_lane_name(store: tuple[Path, str], tmp_path: Path) -> None:
    """A Chinese label (lane, agent, task) is drawn with Noto CJK, not as empty boxes."""
    from fanout.report.png import CJK_FONTS, pyplot

    plt = pyplot()
    assert any(Path(p).exists() for p in CJK_FONTS), "fonts-noto-cjk: make test installs it"
    # drawn with the house font list: a missing glyph would warn, and warnings are errors
    fig = plt.figure(figsize=(2, 1), dpi=100)
    fig.text(0.1, 0.5, "慢车道")
    fig.canvas.draw()
    plt.close(fig)
    # DejaVu alone lacks the glyphs: the check above is a real one
    fig = plt.figure(figsize=(2, 1), dpi=100)
    fig.text(0.1, 0.5, "慢车道", family="DejaVu Sans")
    with pytest.warns(match=r"[Gg]lyph"):
        fig.canvas.draw()
    plt.close(fig)


def test_a_run_past_max_bars_is_aggregated_per_slot_and_bin(
    store: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fanout.report import html

    path, run_id = store
    with db_of(path) as db:
        tl = load_timeline(db, run_id)
    assert tl is not None
    monkeypatch.setattr(html, "MAX_BARS", len(tl.bars) - 1)
    monkeypatch.setattr(html, "GANTT_BINS", 50)
    bars = timeline_data(tl)["bars"]
    assert bars["aggregated"]
    assert "keys" not in bars  # nothing per attempt is carried any more
    assert 0 < len(bars["s"]) < len(tl.bars) * 50
    assert set(bars["s"]) == {b.slot for b in tl.bars}
    # every attempt touched at least one block; blocks of a slot do not overlap
    assert sum(bars["c"]) >= len(tl.bars)
    for s in set(bars["s"]):
        mine = sorted(
            (t0, t0 + d)
            for t0, d, slot in zip(bars["t0"], bars["d"], bars["s"], strict=True)
            if slot == s
        )
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(mine))
        assert mine[-1][1] <= html.GRID + 1


def test_a_run_with_no_attempts_still_draws(tmp_path: Path) -> None:
    """A run answered wholly from the cache has no attempt: every picture is still made
    (and no warning, which the suite turns into an error)."""
    tl = Timeline("r-缓存", "batch", 0.0, 0.0, 0, [])
    out = [tmp_path / f"空.{ext}" for ext in ("html", "png", "json")]
    lines = write_pictures(tl, html=out[0], png=out[1], trace=out[2])
    assert len(lines) == 3
    assert all(p.stat().st_size > 0 for p in out)
    assert not [e for e in json.loads(out[2].read_text())["traceEvents"] if e["ph"] == "X"]


def test_first_token_times_reach_the_page_and_the_trace(
    store: tuple[Path, str], tmp_path: Path
) -> None:
    """`attempts.first_token_at` (the spans interface's column, for streamed attempts)."""
    path, run_id, _counts = with_spans(store, tmp_path)
    with db_of(path) as db:
        if not any(r[1] == "first_token_at" for r in db.execute("PRAGMA table_info(attempts)")):
            db.execute("ALTER TABLE attempts ADD COLUMN first_token_at REAL")  # an older store
        db.execute("UPDATE attempts SET first_token_at = NULL")
        db.execute(
            "UPDATE attempts SET first_token_at = started_at + duration / 4 WHERE attempt = 1"
        )
        tl = load_timeline(db, run_id)
    assert tl is not None
    firsts = [b for b in tl.bars if b.attempt == 1]
    for b in firsts:
        # unix seconds as doubles: a quarter of a microsecond apart at most
        assert b.first_token == pytest.approx(b.t0 + (b.t1 - b.t0) / 4, abs=1e-6), b
    assert all(b.first_token is None for b in tl.bars if b.attempt > 1)
    bars = timeline_data(tl)["bars"]
    assert sum(f is not None for f in bars["f"]) == len(firsts)
    xs = [e for e in json.loads(render_trace(tl))["traceEvents"] if e["ph"] == "X"]
    assert sum("first_token_s" in e["args"] for e in xs) == len(firsts)
