"""Providers: the protocol (`base`) and its implementations, found through entry points.

A provider type is registered in the `fanout.providers` entry-point group as a factory
`from_spec(name, spec, *, concurrency, env) -> Provider`; the built-ins (sim, openai,
anthropic, command, python) register the same way, so a third-party package adds one by
declaring its own entry point.
"""

from fanout.providers.registry import ENTRY_POINT_GROUP as ENTRY_POINT_GROUP
from fanout.providers.registry import build_provider as build_provider
from fanout.providers.registry import provider_types as provider_types

__all__ = ["ENTRY_POINT_GROUP", "build_provider", "provider_types"]
