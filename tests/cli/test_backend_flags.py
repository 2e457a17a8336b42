"""`--backend` / `--ray-address` and fanout.yaml's `backend:` / `ray_address:` where no
cluster is needed: bad choices and a cluster that does not answer are one clear error
before anything runs. Outside tests/ray so they do not wait in line for its cluster."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from fanout.backends.ray import ray_installed
from tests.e2e.test_cli_batch import fanout, read_jsonl, write_jsonl

pytestmark = pytest.mark.e2e
needs_ray = pytest.mark.skipif(
    not ray_installed(), reason="the ray extra is not installed (pip install 'fanout[ray]')"
)


def home(tmp_path: Path) -> dict[str, str]:
    return {"FANOUT_HOME": str(tmp_path / "home")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@needs_ray
def test_a_cluster_that_does_not_answer_is_one_clear_error(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "q", "prompt": "你好"}])
    out = tmp_path / "out.jsonl"
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    p = fanout("batch", src, "-o", out, "--backend", "ray", "--ray-address", address)
    assert p.returncode == 2
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, p.stderr
    assert f"--ray-address {address}: no Ray cluster answers there" in lines[0]
    assert "ray start --head" in lines[0]
    assert not out.exists()


def test_bad_backend_flags_are_refused_before_anything_runs(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "q", "prompt": "你好"}])
    out = tmp_path / "out.jsonl"
    p = fanout("batch", src, "-o", out, "--backend", "dask")
    assert p.returncode == 2
    assert "--backend 'dask': use one of: local, ray" in p.stderr
    p = fanout("batch", src, "-o", out, "--ray-address", "127.0.0.1:6379")
    assert p.returncode == 2
    assert "--ray-address is for --backend ray" in p.stderr
    cfg = tmp_path / "fanout.yaml"
    cfg.write_text("backend: dask\n", encoding="utf-8")
    p = fanout("batch", src, "-o", out, env={"FANOUT_CONFIG": str(cfg)})
    assert p.returncode == 2
    assert f"{cfg}: backend: 'dask' is not allowed; use one of 'local' or 'ray'" in p.stderr
    assert not out.exists()


@needs_ray
def test_fanout_yaml_names_the_backend_and_its_address(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "q", "prompt": "你好"}])
    out = tmp_path / "out.jsonl"
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    cfg = tmp_path / "配置" / "fanout.yaml"
    cfg.parent.mkdir()
    cfg.write_text(f"backend: ray\nray_address: {address}\n", encoding="utf-8")
    env = {**home(tmp_path), "FANOUT_CONFIG": str(cfg)}
    p = fanout("batch", src, "-o", out, "--no-progress", env=env)
    assert p.returncode == 2, p.stderr
    # the message points at the file's line, not at a flag the user never typed
    assert f"{cfg}: ray_address: {address}: no Ray cluster answers there" in p.stderr
    assert "--ray-address" not in p.stderr
    assert not out.exists()
    p = fanout("batch", src, "-o", out, "--no-progress", "--backend", "local", env=env)
    assert p.returncode == 0, p.stderr  # the flag wins over the file
    assert len(read_jsonl(out)) == 1
    cfg.write_text(f"ray_address: {address}\n", encoding="utf-8")
    p = fanout("batch", src, "-o", tmp_path / "o2.jsonl", "--no-progress", env=env)
    assert p.returncode == 2
    assert "ray_address is for backend: ray" in p.stderr
    assert str(cfg) in p.stderr
