"""Any command that reads a prompt on stdin and prints the answer (`claude -p`, `llm`, ...).

Each call is its own process in its own session, so a timeout or a cancellation kills the
whole process group, children included. A non-zero exit is an error carrying the tail of
stderr; a command that does not exist is a permanent error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from fanout.errors import BadRequest, ConfigError, ServerError
from fanout.providers.base import Chunk, Completion, Request, estimate_tokens

if TYPE_CHECKING:
    from fanout.providers.spec import ProviderSpec

STDERR_TAIL = 500


class CommandProvider:
    streams = False

    def __init__(
        self,
        command: str | list[str],
        *,
        name: str = "command",
        env: Mapping[str, str] | None = None,
    ) -> None:
        try:
            self.argv = shlex.split(command) if isinstance(command, str) else list(command)
        except ValueError as exc:  # an unbalanced quote
            raise ConfigError(
                f"the command {command!r} cannot be split into words ({str(exc).lower()}); "
                "check its quotes"
            ) from None
        if not self.argv:
            raise ConfigError("the command provider needs a command, e.g. 'claude -p'")
        self.name = name
        self._env = dict(env) if env is not None else None

    def __repr__(self) -> str:
        return f"CommandProvider({shlex.join(self.argv)!r})"

    def limiter_key(self, model: str) -> str:
        return f"{self.name}:{model}"

    def body(self, request: Request) -> dict[str, Any]:
        return {"command": self.argv, "model": request.model, "messages": request.messages}

    async def complete(self, request: Request) -> Completion:
        prompt = request.prompt_text()
        t0 = time.perf_counter()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                env=self._env,
            )
        except FileNotFoundError:
            raise BadRequest(f"{self.name}: command not found: {self.argv[0]}") from None
        except PermissionError:
            raise BadRequest(f"{self.name}: not executable: {self.argv[0]}") from None
        try:
            out, err = await proc.communicate(prompt.encode("utf-8"))
        except BaseException:
            _kill_group(proc)
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.wait())
            raise
        if proc.returncode != 0:
            tail = err.decode("utf-8", "replace").strip()[-STDERR_TAIL:]
            why = tail or "(no stderr)"
            raise ServerError(f"{self.name}: {self.argv[0]} exited with {proc.returncode}: {why}")
        text = out.decode("utf-8", "replace").strip()
        return Completion(
            text=text,
            input_tokens=estimate_tokens(prompt),
            output_tokens=estimate_tokens(text),
            model=request.model,
            latency_s=time.perf_counter() - t0,
        )

    def stream(self, request: Request) -> AsyncIterator[Chunk | Completion]:
        raise NotImplementedError("the command provider does not stream")

    async def aclose(self) -> None:
        return None


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def from_spec(
    name: str, spec: ProviderSpec, *, concurrency: int, env: Mapping[str, str] | None = None
) -> CommandProvider:
    assert spec.command is not None  # the spec's validator requires it
    provider = CommandProvider(spec.command, name=name)
    # every call would fail with "command not found": say so now, before the run starts
    program = provider.argv[0]
    found = shutil.which(program, path=(env or os.environ).get("PATH"))
    if found is None:
        where = "not an executable file" if os.sep in program else "not found on PATH"
        raise ConfigError(
            f"provider {name!r}: the command {program!r} is {where}; install it or fix the command"
        )
    return provider
