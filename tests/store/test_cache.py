"""The result cache: identical requests are sent once, a second identical run sends none."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from pathlib import Path

import pytest

from fanout import CallableProvider, Engine, MemoryStore, Request, Task
from fanout.store import migrations, queries
from fanout.store.sqlite import SqliteStore
from tests.engine.support import arun


class Counter:
    def __init__(self, fail: set[str] | None = None) -> None:
        self.calls: list[str] = []
        self.fail = fail or set()
        self.inflight = 0
        self.peak: dict[str, int] = {}  # prompt -> most calls with it in flight at once

    async def __call__(self, req: Request) -> str:
        text = req.prompt_text()
        self.calls.append(text)
        self.inflight += 1
        self.peak[text] = max(self.peak.get(text, 0), self.inflight)
        try:
            await asyncio.sleep(0.01)  # long enough that followers sent at once would overlap
        finally:
            self.inflight -= 1
        if text in self.fail:
            from fanout.errors import BadRequest

            raise BadRequest("no")
        return f"answer to {text}"

    def engine(self, store: object, **kw: object) -> Engine:
        return Engine(providers=CallableProvider(self, name="py"), store=store, cache=True, **kw)  # type: ignore[arg-type]


def tasks() -> list[Task]:
    return [
        Task("same", key="a"),
        Task("same", key="b"),  # the same request: sent once, shared
        Task("same", key="vote-1", sample=1),  # another sample index: its own call
        Task("other", key="c"),
        Task(lambda deps: f"after {deps['a'].text}", key="d", depends_on=["a"]),
    ]


def test_identical_requests_are_sent_once_and_a_second_run_sends_none(tmp_path: Path) -> None:
    path = tmp_path / "s.db"

    async def main() -> None:
        first = Counter()
        async with first.engine(SqliteStore(path)) as e:
            run = e.submit(tasks())
            m = await run.wait()
            assert all(r.ok for r in await run.results())
        assert sorted(first.calls) == ["after answer to same", "other", "same", "same"]
        assert m["cached"] == 1
        second = Counter()
        async with second.engine(SqliteStore(path)) as e:
            run = e.submit(tasks())
            m = await run.wait()
            results = await run.results()
        assert second.calls == []
        assert m["cached"] == 5
        assert (m["input_tokens"], m["p50_s"], m["attempts"]) == (0, 0.0, 0)
        assert [r.text for r in results] == [
            "answer to same",
            "answer to same",
            "answer to same",
            "answer to other",
            "answer to after answer to same",
        ]
        with contextlib.closing(sqlite3.connect(path)) as db:
            stats = queries.cache_stats(db)
        assert stats["entries"] == 4  # same (sample 0), same (sample 1), other, after
        assert stats["hits"] == 6

    arun(main)


def test_answers_cached_before_the_m004_layout_are_kept_and_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A store written by a fanout before m004 (the cache a WITHOUT ROWID table keyed by the
    hash) keeps every cached answer when it moves to the rowid layout, and finds them."""
    path = tmp_path / "缓存" / "s.db"
    path.parent.mkdir()
    upto = [name for name, _ in migrations.MIGRATIONS].index("m004_cache_in_arrival_order")

    async def run(c: Counter) -> dict[str, object]:
        async with c.engine(SqliteStore(path)) as e:
            run = e.submit(tasks())
            m = await run.wait()
            assert [r.text for r in await run.results()][3] == "answer to other"
            return m

    with monkeypatch.context() as mp:
        mp.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:upto])
        arun(lambda: run(Counter()))
    with contextlib.closing(sqlite3.connect(path)) as db:
        (old,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'cache'").fetchone()
    assert "WITHOUT ROWID" in old
    monkeypatch.setattr(migrations, "M004_SAY_ABOVE", 3)  # say it for these four answers
    second = Counter()
    with caplog.at_level(logging.WARNING, logger="fanout.store.migrations"):
        m = arun(lambda: run(second))
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        f"fanout: moving the 4 answers cached in {path} to the cache's new layout, once after"
        " an upgrade (about 25 s a million)"
    ]
    assert second.calls == []
    assert m["cached"] == 5
    with contextlib.closing(sqlite3.connect(path)) as db:
        (new,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'cache'").fetchone()
        assert "WITHOUT ROWID" not in new
        # the key's look-up goes through the unique index, not a pass over the answers
        plan = " ".join(
            str(r[-1])
            for r in db.execute("EXPLAIN QUERY PLAN SELECT text FROM cache WHERE key = ?", (b"k",))
        )
        assert "USING INDEX" in plan
        assert queries.cache_stats(db)["entries"] == 4


def test_without_the_cache_every_task_is_sent(tmp_path: Path) -> None:
    async def main() -> None:
        for _ in range(2):
            c = Counter()
            async with Engine(
                providers=CallableProvider(c, name="py"), store=SqliteStore(tmp_path / "s.db")
            ) as e:
                await (e.submit(tasks())).wait()
            assert len(c.calls) == 5

    arun(main)


def test_answers_older_than_the_ttl_are_not_used(tmp_path: Path) -> None:
    path = tmp_path / "s.db"

    async def main() -> None:
        for expected in (4, 0):
            c = Counter()
            async with c.engine(SqliteStore(path), cache_ttl_s=3600) as e:
                await e.submit(tasks()).wait()
            assert len(c.calls) == expected
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("UPDATE cache SET created_at = created_at - 7200")
        c = Counter()
        async with c.engine(SqliteStore(path), cache_ttl_s=3600) as e:
            await e.submit(tasks()).wait()
        assert len(c.calls) == 4

    arun(main)


def test_a_failed_leader_lets_one_follower_try_in_its_turn(tmp_path: Path) -> None:
    async def main() -> None:
        c = Counter(fail={"bad"})
        async with c.engine(MemoryStore()) as e:
            run = e.submit([Task("bad", key=f"k{i}") for i in range(3)])
            m = await run.wait()
        assert c.calls == ["bad", "bad", "bad"]
        assert c.peak == {"bad": 1}  # one at a time, never together
        assert m["failed"] == 3

    arun(main)


def test_the_cache_also_works_with_the_memory_store() -> None:
    async def main() -> None:
        c = Counter()
        async with c.engine(MemoryStore()) as e:
            await e.submit(tasks()).wait()
            await e.submit(tasks()).wait()
        assert len(c.calls) == 4

    arun(main)


def test_the_cache_key_changes_with_model_base_url_and_provider() -> None:
    """One prompt, one key per (provider, base URL, model): an answer from one model, server
    or provider is never served for another; the same three give the same key."""
    from fanout.engine.cache import request_keys
    from fanout.engine.request import build_request
    from fanout.providers.anthropic import AnthropicProvider
    from fanout.providers.openai import OpenAIProvider

    task = Task("解释逆否命题", key="q")

    def key(provider: object, model: str) -> bytes:
        req = build_request(task, 1, model, 500)
        return request_keys(provider, req, task)[0]  # type: ignore[arg-type]

    local = OpenAIProvider(api_key="k", base_url="http://127.0.0.1:9/v1")
    same = OpenAIProvider(api_key="another key", base_url="http://127.0.0.1:9/v1")
    other_server = OpenAIProvider(api_key="k", base_url="http://127.0.0.1:10/v1")
    official = OpenAIProvider(api_key="k")
    renamed = OpenAIProvider(name="work", api_key="k", base_url="http://127.0.0.1:9/v1")
    anthropic = AnthropicProvider(api_key="k", base_url="http://127.0.0.1:9")
    keys = {
        "local": key(local, "m1"),
        "other model": key(local, "m2"),
        "other server": key(other_server, "m1"),
        "official": key(official, "m1"),
        "renamed": key(renamed, "m1"),
        "anthropic": key(anthropic, "m1"),
    }
    assert len(set(keys.values())) == len(keys), keys
    assert key(same, "m1") == keys["local"]  # the key is not part of it: same server, model
