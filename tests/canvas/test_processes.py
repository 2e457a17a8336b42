"""Other processes: a second writer loses none of its edits, and SIGKILL mid-write leaves a
canvas that parses and is exactly the old or the new one."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fanout.canvas import NoteResult, is_our_id, load_canvas, write_results

from .support import assert_kept, read_json, study_canvas, write_canvas

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX locks and signals")

# A second program rewriting the canvas: read, append one node, write a temp file, rename
# over (what editors do), until the stop file appears. With LOCK=1 it takes fanout's canvas
# lock first, like another fanout; with LOCK=0 it does not, like Obsidian. After each write
# it logs how many of fanout's nodes it saw: proof of when it ran.
WRITER = textwrap.dedent(
    """
    import contextlib, json, os, sys, time
    from fanout.canvas import canvas_lock, is_our_id
    path, stop, lock, pause, log = sys.argv[1:6]
    lock = lock == "1"
    i = 0
    while not os.path.exists(stop):
        with canvas_lock(path) if lock else contextlib.nullcontext():
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            data.setdefault("nodes", []).append({"id": f"外部-{i}", "type": "text",
                "text": f"另一个程序写的第 {i} 个节点", "x": -3000, "y": i * 120,
                "width": 300, "height": 100})
            tmp = path + f".writer-{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f, ensure_ascii=False, indent="\\t")
            os.replace(tmp, path)
        ours = sum(1 for n in data["nodes"] if is_our_id(n["id"]))
        with open(log, "a") as f:
            f.write(f"{ours}\\n")
        i += 1
        time.sleep(float(pause))
    """
)

# Loops write-backs until killed; logs the hash of every canvas it is about to swap in,
# so the parent can tell a state we wrote from anything else.
LOOPER = textwrap.dedent(
    """
    import hashlib, os, sys
    from fanout.canvas import NoteResult, write_results
    from fanout.canvas import writeback
    path, log = sys.argv[1], sys.argv[2]
    def remember(_path, new):
        with open(log, "a") as f:
            f.write(hashlib.sha256(new).hexdigest() + "\\n")
            f.flush()
            os.fsync(f.fileno())
    writeback._before_swap = remember
    i = int(sys.argv[3])
    while True:
        text = f"第 {i} 次写回：" + "很长的解释。" * (50 + i % 200)
        write_results(path, [NoteResult(t, f"代理-{i}", text) for t in ("y1", "q1")])
        i += 1
    """
)


def run(script: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def logged_count(log: Path) -> int:
    return len(log.read_text().split()) if log.exists() else 0


def wait_for_writes(child: subprocess.Popen[bytes], log: Path, at_least: int) -> None:
    deadline = time.monotonic() + 30
    while logged_count(log) < at_least:
        if child.poll() is not None:
            raise AssertionError(child.stderr.read().decode() if child.stderr else "child died")
        assert time.monotonic() < deadline, "the child wrote nothing"
        time.sleep(0.005)


def writer_saw(log: Path) -> list[int]:
    return [int(x) for x in log.read_text().split()] if log.exists() else []


def wait_for_writer(writer: subprocess.Popen[bytes], log: Path, more_than: int) -> None:
    deadline = time.monotonic() + 60
    while len(writer_saw(log)) <= more_than:
        if writer.poll() is not None:
            raise AssertionError(writer.stderr.read().decode() if writer.stderr else "died")
        assert time.monotonic() < deadline, "the other writer wrote nothing"
        time.sleep(0.005)


@pytest.mark.parametrize("lock", ["1", "0"], ids=["another-fanout", "obsidian-like"])
def test_a_second_writer_loses_none_of_its_edits(vault: Path, lock: str) -> None:
    path = write_canvas(vault / "课程", "并发.canvas", study_canvas())
    before = read_json(path)
    stop, log = vault / "stop", vault / "writer.log"
    # another fanout saving every 10 ms (it waits for our lock), an editor every 0.5 s
    # (Obsidian saves about every 2 s; one saving faster than a loaded machine can read,
    # merge and fsync a canvas, 0.1 s at a load of 15, keeps ours from landing, and we say so)
    pause = "0.01" if lock == "1" else "0.5"
    writer = run(WRITER, str(path), str(stop), lock, pause, str(log))
    agents = [f"代理{k}" for k in range(40)]
    try:
        wait_for_writer(writer, log, 0)  # it is writing before we start
        for k, agent in enumerate(agents):
            write_results(path, [NoteResult("y1", agent, f"{agent} 的解释")])
            if k in (9, 19, 29):  # and it writes between ours, however loaded the machine
                wait_for_writer(writer, log, len(writer_saw(log)))
        wait_for_writer(writer, log, len(writer_saw(log)))  # and after our last
    finally:
        stop.touch()
        _, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err.decode()
    saw = writer_saw(log)
    count = len(saw)
    # the two writers overlapped: the other one wrote while only some of ours were there
    assert saw[0] == 0
    assert any(0 < n < len(agents) for n in saw)
    after = read_json(path)
    ids = [n["id"] for n in after["nodes"]]
    assert [i for i in ids if i.startswith("外部-")] == [f"外部-{i}" for i in range(count)]
    assert after["nodes"][: len(before["nodes"])] == before["nodes"]
    ours = {i for i in ids if is_our_id(i)}
    if lock == "1":  # with the lock, neither side can lose anything
        assert len(ours) == len(agents)
        assert sorted(saw) == saw  # and it saw ours only grow
    # without it, the other program's read-modify-write may drop ours: a rerun puts them back
    report = write_results(path, [NoteResult("y1", a, f"{a} 的解释") for a in agents])
    final = read_json(path)
    assert {n["id"] for n in final["nodes"] if is_our_id(n["id"])} == {
        n.node_id for n in report.notes
    }
    assert len(final["nodes"]) == len(before["nodes"]) + count + len(agents)
    assert_kept(before, final)


def test_sigkill_during_write_back_leaves_the_old_or_the_new_canvas(
    vault: Path, tmp_path: Path
) -> None:
    path = write_canvas(vault / "课程", "被杀.canvas", study_canvas())
    before = read_json(path)
    log = tmp_path / "hashes.log"
    seen = {hashlib.sha256(path.read_bytes()).hexdigest()}
    rng = random.Random(20251121)
    start = 0
    for _round in range(16):  # about one kill in six lands inside a write
        child = run(LOOPER, str(path), str(log), str(start))
        wait_for_writes(child, log, at_least=logged_count(log) + 2)
        time.sleep(rng.uniform(0, 0.03))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        if child.stderr:
            child.stderr.close()
        start += 1000
        logged = set(log.read_text().split())
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() in seen | logged  # the old or a new one, whole
        canvas = load_canvas(path)
        assert canvas.warnings == []
        assert_kept(before, read_json(path))
        for node in canvas.nodes[len(before["nodes"]) :]:
            assert is_our_id(node.id)
            assert node.file is not None
            assert (vault / node.file).is_file()  # notes go in before the canvas names them
    # the next write-back clears the temp files a killed writer left (hidden, beside it)
    write_results(path, [NoteResult("y1", "收尾", "最后一次")])
    assert not [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}")]
