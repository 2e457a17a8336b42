"""The provider types: found through the `fanout.providers` entry points."""

from __future__ import annotations

from typing import Any

ENTRY_POINT_GROUP = "fanout.providers"

# used when the package metadata is missing (e.g. running from a source tree)
_BUILTIN = {
    "sim": "fanout.providers.sim:from_spec",
    "openai": "fanout.providers.openai:from_spec",
    "anthropic": "fanout.providers.anthropic:from_spec",
    "command": "fanout.providers.command:from_spec",
    "python": "fanout.providers.python:from_spec",
}


def entry_points(**params: Any) -> Any:
    """`importlib.metadata.entry_points`, imported when first asked: that module (and the
    `email`, `zipfile` and `csv` it pulls in) is 3.4 MB of memory a process running only the
    engine never needs (every import of a provider module goes through this package)."""
    from importlib.metadata import entry_points as found

    return found(**params)


#: (the `entry_points` function asked, what it found): reading every installed package's
#: metadata costs ~5 ms a time and a command asks several times; asked again only when the
#: function is another (a test that puts a fake one in its place)
_found: tuple[object, dict[str, str]] | None = None


def provider_types() -> dict[str, str]:
    """Provider type -> "module:factory", built-ins first, then plugins."""
    global _found
    if _found is None or _found[0] is not entry_points:
        found = dict(_BUILTIN)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            found[ep.name] = ep.value
        _found = (entry_points, found)
    return dict(_found[1])
