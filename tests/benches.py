"""The benchmarks' own code, for the tests that check what a benchmark measures.

bench/ is not a package (each file runs as a script), so a test loads a file of it by path:
`bench_module("crash")` is bench/crash.py. One module object per file and process, kept in
`sys.modules` under the file's own name, the name the benchmarks import each other by
(bench/canvas_layout.py does `from canvas_corpus import ...`): a test and the benchmark it
loads then share one copy, and a dataclass of the file finds its module.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_module(name: str) -> ModuleType:
    """bench/NAME.py, loaded once (later calls return the same module)."""
    path = BENCH / f"{name}.py"
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() != path:
            raise RuntimeError(f"sys.modules[{name!r}] is {loaded!r}, not {path}")
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise FileNotFoundError(f"no benchmark {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
