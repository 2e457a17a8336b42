"""A Python callable as a provider: `callable: package.module:function` in fanout.yaml.

The function takes a `Request` and returns a string or a `Completion`; sync functions run
in a thread so they never block the event loop. `cpu: true` marks a function that burns
CPU: on the Ray backend its calls run on one worker process per CPU of the cluster."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from fanout.errors import ConfigError
from fanout.providers.base import CallableProvider

if TYPE_CHECKING:
    from fanout.providers.spec import ProviderSpec


def from_spec(
    name: str, spec: ProviderSpec, *, concurrency: int, env: Mapping[str, str] | None = None
) -> CallableProvider:
    assert spec.callable is not None  # the spec's validator requires it
    module_name, _, attr = spec.callable.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"provider {name!r}: cannot import {spec.callable} ({exc}); check the module is "
            "importable from here and the function name is right"
        ) from None
    if not callable(obj):
        raise ConfigError(f"provider {name!r}: {spec.callable} is not callable")
    return CallableProvider(obj, name=name, cpu=bool(spec.cpu), ref=spec.callable)
