"""Pictures of a run: `text` (the summary, `fanout runs`, `status`, `report`)."""

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
