# Two commands: `make demo` and `make test`. Both create .venv on first use and are
# fast when it is already up to date (a stamp file per install set).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck bench clean fonts report-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.stamp-base: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.stamp-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(VENV)/.stamp-base $@

# The demo works on a copy of examples/vault in scratch/ (ignored), so the tree stays clean.
# Its batch leaves the cache alone: the README's tour runs the same file and shows real calls.
# --restore-deleted: the copy is fresh, so the notes an earlier demo wrote are missing from
# it not because a learner deleted them (without it a second `make demo` adds no notes).
demo: $(VENV)/.stamp-base
	@rm -rf scratch/vault && mkdir -p scratch && cp -r examples/vault scratch/vault
	$(BIN)/fanout canvas run scratch/vault/离散数学.canvas --agents oral-explanation,memory-anchor,comparison-table --no-progress --restore-deleted
	$(BIN)/fanout canvas run scratch/vault/数据结构.canvas --smart --no-progress --restore-deleted
	$(BIN)/fanout batch examples/jobs.jsonl -o scratch/results.jsonl --concurrency 16 --no-progress --no-cache
	@echo
	@echo "canvases with their new notes: scratch/vault/ (open it in Obsidian)"
	@echo "batch results: scratch/results.jsonl ($$(wc -l < scratch/results.jsonl) lines)"

# The timeline tests open `fanout report --html` in Debian's headless Chromium and draw
# Chinese labels with Noto CJK; the canvas write is tested on a real FUSE file system that
# cannot swap files (bindfs). Installed here when missing (a fresh CI machine), else nothing.
CJK_FONT := /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc
report-deps:
	@if [ ! -x /usr/bin/chromium ] || [ ! -f $(CJK_FONT) ] || [ ! -x /usr/bin/bindfs ]; then \
		echo "installing chromium, fonts-noto-cjk and bindfs (for the timeline and canvas tests)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk bindfs; \
	fi

# Two workers: most slow tests wait on subprocesses and sockets, not the CPU. Groups that
# must not share a worker's time with each other, and the `solo` tests run after the rest
# in one process (they count 429s of paced processes), are named in tests/conftest.py.
TEST_WORKERS ?= 2
test: $(VENV)/.stamp-dev fonts report-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	@# fanout's own modules compiled once: pip compiles the installed packages but not the
	@# editable src/, and with PYTHONDONTWRITEBYTECODE=1 set every `fanout` subprocess of the
	@# suite compiled the modules it imports again (0.13 s of CPU a one-line batch)
	$(BIN)/python -m compileall -q src
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not solo"
	$(BIN)/python -m pytest -q -m solo

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.stamp-dev
	$(BIN)/mypy

bench: $(VENV)/.stamp-dev
	$(BIN)/python bench/overhead.py --tasks 100000
	$(BIN)/python bench/wall.py
	$(BIN)/python bench/ratelimit.py
	$(BIN)/python bench/serial_vs_parallel.py
	$(BIN)/fanout bench --out scratch/bench

clean:
	rm -rf $(VENV) scratch .pytest_cache .mypy_cache .ruff_cache

# A CJK font for drawing canvases with Chinese text (bench/canvas_render.py): installed
# with apt-get only where it is missing, we are root and apt-get exists; else a no-op.
fonts:
	@if ! fc-list 2>/dev/null | grep -qi "Noto Sans CJK\|Noto Serif CJK" \
	  && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q fonts-noto-cjk >/dev/null \
	    || echo "fonts-noto-cjk not installed: canvas pictures will lack Chinese glyphs"; \
	fi
