"""The one error tree of fanout.

```
FanoutError                      anything fanout raises on purpose; str() is the user's message
├── ConfigError                  bad configuration or arguments, also a ValueError (CLI exit 2)
├── InputError                   a bad input file or line (CLI exit 2)
├── PlanError                    a plan that cannot run: cycle, unknown or duplicate dependency
├── RunBusy                      the run is being run by another live process
├── CanvasWriteError             a canvas or note could not be written safely (nothing changed)
└── ProviderError                a provider call failed; `error_class` says what the engine does
    ├── TransientError           retried with backoff                       error_class="transient"
    │   ├── RateLimited          429; carries `retry_after`
    │   ├── Overloaded           529 / "overloaded"; carries `retry_after`
    │   ├── ServerError          5xx
    │   ├── ProviderTimeout      attempt or stream-idle timeout
    │   ├── ConnectionFailed     could not connect: the request never reached the provider
    │   └── ConnectionLost       the connection broke after the request was sent
    ├── PermanentError           fails the task at once                      error_class="permanent"
    │   ├── BadRequest           400 / 404 / 422
    │   └── AuthError            401 / 403
    └── ContentError             one retry with a larger budget or the error  error_class="content"
        ├── EmptyOutput          the answer had no text
        ├── TruncatedOutput      cut at the token limit (finish reason "length")
        └── InvalidOutput        failed the task's validator (e.g. not JSON)
```

Every exception raised about a run or a task carries `run_id` / `task_id` when known.
"""

from __future__ import annotations

from typing import ClassVar, Literal

ErrorClass = Literal["transient", "permanent", "content", "cancelled", "dependency", "internal"]


class FanoutError(Exception):
    """Base of every error fanout raises on purpose."""

    def __init__(self, message: str, *, run_id: str | None = None, task_id: str | None = None):
        super().__init__(message)
        self.message = message
        self.run_id = run_id
        self.task_id = task_id


class ConfigError(FanoutError, ValueError):
    """Configuration or arguments that cannot be used (also a `ValueError`, so the same
    bad value raises the same error whether it came from a file, a flag or a call)."""


class InputError(FanoutError):
    """An input file or line that cannot be read."""


class PlanError(FanoutError):
    """A set of tasks that cannot be scheduled (cycle, unknown dependency, duplicate key)."""


class RunBusy(FanoutError):
    """The run is being run by another live process."""


class CanvasWriteError(FanoutError):
    """A canvas or note could not be written safely; the canvas was left as it was."""


class ProviderError(FanoutError):
    """A provider call failed."""

    error_class: ClassVar[ErrorClass] = "transient"
    #: seconds the provider asked us to wait (Retry-After), if it said
    retry_after: float | None
    #: what the provider's rate headers said (`providers.sdk.rate_headers`), if it sent any
    rate: dict[str, float] | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        run_id: str | None = None,
        task_id: str | None = None,
    ):
        super().__init__(message, run_id=run_id, task_id=task_id)
        self.status = status
        self.retry_after = retry_after

    @property
    def kind(self) -> str:
        """Short name used in summaries, e.g. ``rate_limited``."""
        return _KIND_NAMES.get(type(self), type(self).__name__)


class TransientError(ProviderError):
    error_class: ClassVar[ErrorClass] = "transient"


class RateLimited(TransientError):
    pass


class Overloaded(TransientError):
    pass


class ServerError(TransientError):
    pass


class ProviderTimeout(TransientError):
    pass


class ConnectionFailed(TransientError):
    """Could not connect (refused, reset on connect, DNS, connect timeout): the request
    never reached the provider, so retrying it costs no attempt and no retry budget."""


class ConnectionLost(TransientError):
    """The connection broke after the request was sent (the provider may have seen it)."""


class PermanentError(ProviderError):
    error_class: ClassVar[ErrorClass] = "permanent"


class BadRequest(PermanentError):
    pass


class AuthError(PermanentError):
    pass


class ContentError(ProviderError):
    error_class: ClassVar[ErrorClass] = "content"


class EmptyOutput(ContentError):
    pass


class TruncatedOutput(ContentError):
    pass


class InvalidOutput(ContentError):
    pass


_KIND_NAMES: dict[type[ProviderError], str] = {
    RateLimited: "rate_limited",
    Overloaded: "overloaded",
    ServerError: "server_error",
    ProviderTimeout: "timeout",
    ConnectionFailed: "connection",
    ConnectionLost: "connection_lost",
    BadRequest: "bad_request",
    AuthError: "auth",
    EmptyOutput: "empty_output",
    TruncatedOutput: "truncated",
    InvalidOutput: "invalid_output",
    TransientError: "transient",
    PermanentError: "permanent",
    ContentError: "content",
}


def error_for_status(
    status: int, message: str, *, retry_after: float | None = None
) -> ProviderError:
    """Map an HTTP status to the error class the engine acts on."""
    cls: type[ProviderError]
    if status == 429:
        cls = RateLimited
    elif status == 529:
        cls = Overloaded
    elif status in (401, 403):
        cls = AuthError
    elif status in (408, 409) or status >= 500:
        cls = ServerError
    elif 400 <= status < 500:
        cls = BadRequest
    else:
        cls = ServerError
    return cls(message, status=status, retry_after=retry_after)
