"""The provider registry: types found through the `fanout.providers` entry points, and
building a provider from its spec."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from fanout.errors import ConfigError

if TYPE_CHECKING:
    from fanout.providers.base import Provider
    from fanout.providers.spec import ProviderSpec

ENTRY_POINT_GROUP = "fanout.providers"

Factory = Callable[..., "Provider"]

# used when the package metadata is missing (e.g. running from a source tree)
_BUILTIN = {
    "sim": "fanout.providers.sim:from_spec",
    "openai": "fanout.providers.openai:from_spec",
    "anthropic": "fanout.providers.anthropic:from_spec",
    "command": "fanout.providers.command:from_spec",
    "python": "fanout.providers.python:from_spec",
}


def provider_types() -> dict[str, str]:
    """Provider type -> "module:factory", built-ins first, then plugins."""
    found = dict(_BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.value
    return found


def _load(ref: str) -> Factory:
    import importlib

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
