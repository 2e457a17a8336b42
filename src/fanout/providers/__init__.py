"""Providers: the protocol (`base`) and its implementations, found through entry points.

A provider type is registered in the `fanout.providers` entry-point group as a factory
`from_spec(name, spec, *, concurrency, env) -> Provider`; the built-ins (sim, openai,
anthropic, command, python) register the same way, so a third-party package adds one by
declaring its own entry point.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from fanout.errors import ConfigError
from fanout.providers.registry import ENTRY_POINT_GROUP as ENTRY_POINT_GROUP
from fanout.providers.registry import provider_types as provider_types

if TYPE_CHECKING:
    from fanout.providers.base import Provider
    from fanout.providers.spec import ProviderSpec

__all__ = ["ENTRY_POINT_GROUP", "build_provider", "provider_types"]

Factory = Callable[..., "Provider"]


def _load(ref: str) -> Factory:
    module, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


def build_provider(
    name: str,
    spec: ProviderSpec,
    *,
    concurrency: int,
    env: Mapping[str, str] | None = None,
) -> Provider:
    """Build the provider `name` described by `spec` (from fanout.yaml or the CLI)."""
    types = provider_types()
    ref = types.get(spec.type)
    if ref is None:
        raise ConfigError(
            f"provider {name!r}: unknown type {spec.type!r}; known: {', '.join(sorted(types))}"
        )
    factory = _load(ref)
    provider: Provider = factory(name, spec, concurrency=concurrency, env=env)
    return provider
