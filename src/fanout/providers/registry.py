"""The provider types: found through the `fanout.providers` entry points."""

from __future__ import annotations

from importlib.metadata import entry_points

ENTRY_POINT_GROUP = "fanout.providers"

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
