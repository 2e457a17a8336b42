"""Prompts that are filled in from a task's dependencies and describe themselves, so the run
store can keep them and a resumed run can rebuild them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fanout.tasks import Result

_PLACEHOLDER = re.compile(r"\{\{([^{}]+)\}\}")


class Placeholders:
    """A prompt that replaces {{ID}} with the answer of dependency ID. It describes itself
    (`to_spec`), so the run store can keep it and a resumed run can rebuild it."""

    __slots__ = ("content",)

    def __init__(self, content: str | list[dict[str, Any]]) -> None:
        self.content = content

    def to_spec(self) -> dict[str, Any]:
        return {"kind": "placeholders", "content": self.content}

    def __call__(self, deps: Mapping[str, Result]) -> str | list[dict[str, Any]]:
        def fill(text: str) -> str:
            def sub(m: re.Match[str]) -> str:
                r = deps.get(m.group(1).strip())
                if r is None:
                    return m.group(0)
                return r.text if r.ok and r.text is not None else f"[{m.group(1)} failed]"

            return _PLACEHOLDER.sub(sub, text)

        content = self.content
        if isinstance(content, str):
            return fill(content)
        return [
            {**m, "content": fill(m["content"])} if isinstance(m["content"], str) else m
            for m in content
        ]
