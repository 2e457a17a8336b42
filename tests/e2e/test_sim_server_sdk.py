"""`python -m fanout.sim_server` as its own process, used through the sync `openai` and
`anthropic` SDKs; `--stats-file` across a graceful and a hard restart."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
USER: Any = [{"role": "user", "content": "请解释什么是递归，并举一个例子。"}]
SECRET = "sk-e2e-secret-key-0042"


class Server:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc, self.url = proc, url

    def openai(self, **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=SECRET, max_retries=0, **kw)

    def anthropic(self, **kw: Any) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=SECRET, max_retries=0, **kw)

    def stats(self, reset: bool = False) -> dict[str, Any]:
        url = self.url + ("/stats/reset" if reset else "/stats")
        with urllib.request.urlopen(url, data=b"" if reset else None, timeout=30) as r:
            stats: dict[str, Any] = json.load(r)
        return stats


@contextmanager
def sim_server(*args: str, stop: int = signal.SIGTERM) -> Iterator[Server]:
    """Start the server on a free port, yield it, stop it with `stop`; check what it printed."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    cmd = [sys.executable, "-m", "fanout.sim_server", "--port", "0", "--latency", "1ms", *args]
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            line = proc.stdout.readline()
            m = re.fullmatch(r"sim-server listening on (http://127\.0\.0\.1:(\d+))\n", line)
            assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
            assert int(m[2]) > 0
            yield Server(proc, m[1])
        finally:
            if proc.poll() is None:
                proc.send_signal(stop)
            out, err = proc.communicate(timeout=30)
        assert SECRET not in out + err
        if stop == signal.SIGTERM:
            assert proc.returncode == 0, err
            assert out == ""


def test_sync_sdks_plain_and_streaming_against_the_process() -> None:
    with sim_server() as server, server.openai() as oc, server.anthropic() as ac:
        r = oc.chat.completions.create(model="sim-1", messages=USER, max_tokens=500)
        text = r.choices[0].message.content or ""
        assert sum("\u4e00" <= ch <= "\u9fff" for ch in text) > len(text) / 2
        chunks = list(
            oc.chat.completions.create(model="sim-1", messages=USER, max_tokens=500, stream=True)
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
        m = ac.messages.create(model="sim-1", max_tokens=500, messages=USER)
        assert m.content[0].type == "text"
        assert m.content[0].text == text
        with ac.messages.stream(model="sim-1", max_tokens=500, messages=USER) as stream:
            assert "".join(stream.text_stream) == text
            assert stream.get_final_message().usage.output_tokens == m.usage.output_tokens
        assert [x.id for x in oc.models.list()] == [x.id for x in ac.models.list()] == ["sim-1"]
        stats = server.stats()
        assert stats["completed_total"] == 4
        # both SDKs sent the same two bodies (plain, and with "stream": true)
        assert sorted(stats["by_request_hash"].values()) == [2, 2]


def test_cli_flags_limits_and_faults() -> None:
    with sim_server("--rpm", "1") as server, server.openai() as oc, server.anthropic() as ac:
        oc.chat.completions.create(model="sim-1", messages=USER)
        with pytest.raises(openai.RateLimitError) as err:
            oc.chat.completions.create(model="sim-1", messages=USER)
        assert float(err.value.response.headers["retry-after"]) > 0
        with pytest.raises(anthropic.RateLimitError):  # the same key: the same budget
            ac.messages.create(model="sim-1", max_tokens=50, messages=USER)
        assert server.stats()["rejected_429"] == 2
    with (
        sim_server("--faults", "529=1", "--seed", "5") as server,
        server.anthropic() as ac,
        pytest.raises(anthropic.OverloadedError),
    ):
        ac.messages.create(model="sim-1", max_tokens=50, messages=USER)


def wait_for_file(path: Path, completed: int) -> None:
    for _ in range(500):
        if path.exists() and json.loads(path.read_text())["completed_total"] == completed:
            return
        time.sleep(0.01)
    raise AssertionError(f"{path} never showed {completed} completions")


def test_stats_file_survives_graceful_and_hard_restarts(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    flag = ("--stats-file", str(path))
    with sim_server(*flag) as server, server.openai() as oc:
        oc.chat.completions.create(model="sim-1", messages=USER)
        oc.chat.completions.create(model="sim-1", messages=USER)
        before = server.stats()
    assert json.loads(path.read_text())["by_request_hash"] == before["by_request_hash"]
    assert list(before["by_request_hash"].values()) == [2]
    with sim_server(*flag, stop=signal.SIGKILL) as server, server.openai() as oc:
        assert server.stats()["completed_total"] == 2
        oc.chat.completions.create(model="sim-1", messages=USER, max_tokens=7)
        wait_for_file(path, 3)  # persisted within moments of the completion, not at exit
    with sim_server(*flag) as server:
        stats = server.stats()
        assert stats["completed_total"] == 3
        assert stats["requests_total"] == 3
        assert sorted(stats["by_request_hash"].values()) == [1, 2]
        assert server.stats(reset=True)["completed_total"] == 0
    assert json.loads(path.read_text())["completed_total"] == 0
