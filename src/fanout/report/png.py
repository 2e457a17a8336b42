"""`fanout report RUN --png FILE`: the Gantt and the in-flight curve as a picture, through
matplotlib (the optional extra `fanout[report]`).

1,600 px wide at 100 dpi. Labels may be Chinese (lane, agent, task names): the font list
puts DejaVu Sans first and Noto Sans CJK (Debian's `fonts-noto-cjk`) after it, which
matplotlib uses for the glyphs DejaVu lacks. Without the CJK font the picture is still
drawn, with boxes for those glyphs, and a warning says so.

Bars are drawn as one polygon collection per lane (and one for retries, hatched), so a
100,000-attempt run draws in seconds, not the minutes one patch per bar would take.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fanout.errors import ConfigError
from fanout.report.timeline import WAIT_KINDS, Timeline, waiting_counts, waits_fit

#: where Debian's fonts-noto-cjk puts the sans face
CJK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.otf",
)
PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#ff9da7"]
WAIT_COLOURS = {
    "deps": "#bdbdbd",
    "queued": "#d9d9d9",
    "lane": "#9ecae1",
    "rpm": "#fdd0a2",
    "tpm": "#fdae6b",
    "retry_after": "#fc9272",
    "circuit": "#fb6a4a",
    "budget": "#bcbddc",
    "backoff": "#fee391",
}
#: the waiting chart's lines: darker than the segments, to read on white
WAIT_LINES = {
    "deps": "#636363",
    "queued": "#969696",
    "lane": "#3182bd",
    "rpm": "#e6550d",
    "tpm": "#a63603",
    "retry_after": "#de2d26",
    "circuit": "#a50f15",
    "budget": "#756bb1",
    "backoff": "#b8860b",
}
#: waits drawn one by one at most; beyond, the waiting chart alone
MAX_WAITS = 30_000
FAILED = "#d62728"
WIDTH_PX, DPI = 1600, 100


def pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(
            "--png needs matplotlib: pip install 'fanout[report]' (or use --html or --trace)"
        ) from None
    matplotlib.use("Agg")
    from matplotlib import font_manager
    from matplotlib import pyplot as plt

    cjk = None
    for path in CJK_FONTS:
        if os.path.exists(path):
            font_manager.fontManager.addfont(path)
            cjk = font_manager.FontProperties(fname=path).get_name()
            break
    plt.rcParams["font.family"] = ["DejaVu Sans", *([cjk] if cjk else [])]
    return plt


def _short(label: str, width: int = 22) -> str:
    """A legend label that fits the figure's right margin."""
    return label if len(label) <= width else label[: width - 1] + "…"


def _rects(items: list[tuple[float, float, float, float]]) -> list[list[tuple[float, float]]]:
    return [[(x0, y0), (x1, y0), (x1, y1), (x0, y1)] for x0, x1, y0, y1 in items]


def write_png(tl: Timeline, path: Path) -> None:
    plt = pyplot()
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    waits_drawn = waits_fit(tl, MAX_WAITS)
    rows = tl.slots + (tl.wait_rows + 1 if waits_drawn else 0)
    gantt_in = min(max(rows * 0.18, 1.2), 9.0) + 0.6
    waiting = waiting_counts(tl)
    charts = 1 + (1 if waiting else 0)
    fig, axes = plt.subplots(
        1 + charts,
        1,
        figsize=(WIDTH_PX / DPI, gantt_in + 2.2 * charts + 0.8),
        dpi=DPI,
        sharex=True,
        gridspec_kw={"height_ratios": [gantt_in] + [2.2] * charts},
    )
    ax = axes[0]
    lanes = tl.lanes
    colour = {lane: PALETTE[i % len(PALETTE)] for i, lane in enumerate(lanes)}
    groups: dict[tuple[str, bool], list[tuple[float, float, float, float]]] = {}
    failed: list[tuple[float, float, float, float]] = []
    for b in tl.bars:
        r = (b.t0, max(b.t1, b.t0 + tl.end * 1e-4), b.slot + 0.1, b.slot + 0.9)
        groups.setdefault((b.lane, b.attempt > 1), []).append(r)
        if b.outcome not in ("done", None):
            failed.append(r)
    for (lane, retry), items in groups.items():
        ax.add_collection(
            PolyCollection(
                _rects(items),
                facecolors=colour[lane],
                # a thin white edge keeps neighbouring attempts of a slot apart, until the
                # bars are too many for it not to wash the colours out
                edgecolors="#333333" if retry else ("white" if len(tl.bars) < 5_000 else "none"),
                hatch="///" if retry else None,
                linewidths=0.4,
            )
        )
    if failed:
        ax.add_collection(
            PolyCollection(_rects(failed), facecolors="none", edgecolors=FAILED, linewidths=1.2)
        )
    if waits_drawn:
        by_kind: dict[str, list[tuple[float, float, float, float]]] = {}
        base = tl.slots + 1
        for w in tl.waits:
            y = base + w.row
            by_kind.setdefault(w.kind, []).append((w.t0, w.t1, y + 0.2, y + 0.8))
        for kind, items in by_kind.items():
            ax.add_collection(
                PolyCollection(_rects(items), facecolors=WAIT_COLOURS.get(kind, "#eeeeee"))
            )
    ax.set_xlim(0, tl.end or 1.0)
    ax.set_ylim(max(rows, 1), 0)
    step = max(1, rows // 24)
    ax.set_yticks(
        [s + 0.5 for s in range(0, tl.slots, step)], [str(s) for s in range(0, tl.slots, step)]
    )
    ax.set_ylabel("concurrency slot" + (" / waiting" if waits_drawn else ""))
    slots = f"{tl.slots} slot" + ("" if tl.slots == 1 else "s")
    title = f"fanout run {tl.run_id} ({tl.kind}): {len(tl.bars):,} attempts on {slots}"
    ax.set_title(title, loc="left")
    handles = [Patch(facecolor=colour[lane], label=_short(f"lane {lane}")) for lane in lanes]
    if any(retry for _lane, retry in groups):
        handles.append(Patch(facecolor="white", edgecolor="#333333", hatch="///", label="retry"))
    if failed:
        handles.append(Patch(facecolor="white", edgecolor=FAILED, label="failed attempt"))
    if waits_drawn:
        kinds = [k for k in WAIT_KINDS if k in {w.kind for w in tl.waits}]
        handles += [Patch(facecolor=WAIT_COLOURS[k], label=f"waiting: {k}") for k in kinds]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9)
    named = [a for a in tl.agents if a != "-"]
    if named:
        agents = ", ".join(named[:8]) + (" …" if len(named) > 8 else "")
        ax.text(0.0, -0.02, f"agents: {agents}", transform=ax.transAxes, va="top", fontsize=9)

    cx = axes[1]
    xs = [t for t, _ in tl.in_flight]
    cx.step(xs, [v for _, v in tl.in_flight], where="post", label="in flight", color="#4e79a7")
    limit = [(s.t, s.limit_now) for s in tl.samples if s.limit_now is not None]
    if limit:
        cx.step(*zip(*limit, strict=True), where="post", label="concurrency limit", color=FAILED)
    cx.set_ylabel("attempts")
    cx.yaxis.set_major_locator(MaxNLocator(integer=True))
    cx.set_ylim(bottom=0)
    cx.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9)
    if waiting:
        wx = axes[2]
        for kind, pts in waiting.items():
            wx.step(
                [t for t, _ in pts],
                [v for _, v in pts],
                where="post",
                label=kind,
                color=WAIT_LINES.get(kind, "#777777"),
            )
        wx.set_ylabel("tasks waiting")
        wx.yaxis.set_major_locator(MaxNLocator(integer=True))
        wx.set_ylim(bottom=0)
        wx.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9)
    axes[-1].set_xlabel("seconds since the run's first instant")
    # fixed margins (room on the right for the legends): tight_layout would draw the
    # whole figure once more only to measure it
    # whole figure once more only to measure it; the gap between panels is about half an
    # inch, whatever their heights (hspace is a share of their mean height)
    height = fig.get_figheight()
    mean_axes_in = (gantt_in + 2.2 * charts) / (1 + charts)
    fig.subplots_adjust(
        left=0.05,
        right=0.85,
        top=1 - 0.35 / height,
        bottom=0.5 / height,
        hspace=0.55 / mean_axes_in,
    )
    fig.savefig(path, format="png", dpi=DPI)
    plt.close(fig)
