"""The batch application: a JSONL file of requests in, one JSONL result line per input line
out, as a durable run.

- `parse`: input lines -> tasks (`read_batch`, `parse_lines`, `Batch`, `LineError`);
- `output`: results -> output lines (`output_line`, `AtomicJsonlWriter`, `BatchSink`);
- `run`: plan, start, resume and export a batch run through `fanout.launch`.
"""

from fanout.batch.output import (
    ORDERS,
    AtomicJsonlWriter,
    BatchSink,
    Order,
    check_output_path,
    output_line,
    parse_order,
)
from fanout.batch.parse import Batch, LineError, parse_lines, read_batch

__all__ = [
    "ORDERS",
    "AtomicJsonlWriter",
    "Batch",
    "BatchSink",
    "LineError",
    "Order",
    "check_output_path",
    "output_line",
    "parse_lines",
    "parse_order",
    "read_batch",
]
