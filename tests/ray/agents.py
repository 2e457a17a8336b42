"""Python agents the Ray workers import by name (tests/ray/test_engine_on_ray.py)."""

from __future__ import annotations

import os
import time

from fanout.providers.base import Request


def burn(request: Request) -> str:
    """A CPU-bound agent: spins ~20 ms of CPU, answers with its process id."""
    end = time.thread_time() + 0.02
    n = 0
    while time.thread_time() < end:
        n += 1
    return f"{os.getpid()} {request.prompt_text()}"
