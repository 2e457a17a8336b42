"""The public surface: one sorted __all__, every name importable."""

from __future__ import annotations

import fanout


def test_all_is_sorted_and_unique() -> None:
    assert list(fanout.__all__) == sorted(set(fanout.__all__))


def test_every_public_name_exists() -> None:
    for name in fanout.__all__:
        assert getattr(fanout, name) is not None, name


def test_no_undeclared_public_names() -> None:
    for name in fanout.__all__:  # each is loaded on first use: load them all
        getattr(fanout, name)
    public = {n for n in vars(fanout) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(fanout, n)).__name__ == "module"}
    assert public - modules == set(fanout.__all__)


def test_run_batch_blocking_helper_returns_results_in_order() -> None:
    results = fanout.run_batch(
        ["第一个问题", fanout.Task("second", key="two")],
        providers=fanout.SimProvider(fanout.SimConfig(base_latency_s=0.001)),
    )
    assert [r.ok for r in results] == [True, True]
    assert results[1].key == "two"
    assert results[0].text
    assert any("\u4e00" <= c <= "\u9fff" for c in results[0].text)
