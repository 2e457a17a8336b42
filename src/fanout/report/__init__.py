"""Pictures of a run: `text` (the summary, `fanout runs`, `status`, `report`); the
timeline (`timeline`, drawn by `html`, `png` and `trace`; written by `pictures`) of
`fanout report --html/--png/--trace`; `bench`, the runs of `fanout bench`."""

from fanout.report.text import (
    fmt_s,
    format_runs,
    format_status,
    report_lines,
    run_report,
    summary_lines,
    when,
)

__all__ = [
    "fmt_s",
    "format_runs",
    "format_status",
    "report_lines",
    "run_report",
    "summary_lines",
    "when",
]
