"""Pictures of a run: `text` (the summary, `fanout runs`, `status`, `report`),
`breakdown` (where each task's time went, from its spans); the timeline (`timeline`, drawn
by `html`, `png` and `trace`; written by `pictures`) of `fanout report --html/--png/--trace`;
`bench`, the runs of `fanout bench`."""

from fanout.report.text import (
    aligned,
    fmt_s,
    format_runs,
    format_status,
    report_lines,
    report_prices,
    run_report,
    summary_lines,
    when,
    where_time_went,
)

__all__ = [
    "aligned",
    "fmt_s",
    "format_runs",
    "format_status",
    "report_lines",
    "report_prices",
    "run_report",
    "summary_lines",
    "when",
    "where_time_went",
]
