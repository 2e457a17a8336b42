"""The original design's Python API, `ParallelAgentExecutor` (seed notes, Story 8.14), over
fanout's launch layer: its task dicts, its status words, its aggregated results."""

from fanout.executor.core import DEFAULT_CONFIG, KIND, ParallelAgentExecutor

__all__ = ["DEFAULT_CONFIG", "KIND", "ParallelAgentExecutor"]
