"""How to reach one provider, as written under `providers:` in fanout.yaml.

A spec never holds a key: `api_key_env` names the environment variable that does, and a
value that looks like a key itself is refused (and never echoed in full).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fanout.errors import ConfigError
from fanout.providers.registry import provider_types

ProviderType = Literal["openai", "anthropic", "command", "python", "sim"]
PROVIDER_TYPES: tuple[str, ...] = get_args(ProviderType)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CALLABLE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*\Z")
_KEY_PREFIXES = (
    "sk-", "sk_", "gsk_", "xai-", "hf_", "AIza", "pplx-", "nvapi-", "r8_", "ghp_",
    "github_pat_", "glpat-", "csk-",
)  # fmt: skip


class ProviderSpec(BaseModel):
    """How to reach one provider. Built into a `Provider` elsewhere; never holds a key.
    `timeout` and `options` are for the provider's own use (e.g. `SimConfig` fields)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    type: str  # a built-in type (ProviderType) or one a plugin registers
    base_url: str | None = None
    api_key_env: str | None = None
    model: str | None = None
    rpm: float | None = Field(default=None, gt=0)
    tpm: float | None = Field(default=None, gt=0)
    concurrency: int | None = Field(default=None, ge=1)
    adaptive: bool | None = None
    command: str | None = Field(default=None, min_length=1)
    callable: str | None = None
    cpu: bool | None = None  # type python: the function burns CPU (Ray: an actor per CPU)
    timeout: float | None = Field(default=None, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _has_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and "type" not in data:
            raise ValueError(f"`type` is required; one of: {', '.join(sorted(provider_types()))}")
        return data

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        known = provider_types()
        if value not in known:
            raise ValueError(
                f"{value!r} is not a provider type; known: {', '.join(sorted(known))} "
                "(a plugin adds one through the fanout.providers entry points)"
            )
        return value

    @field_validator("api_key_env")
    @classmethod
    def _names_a_variable(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if looks_like_key(value):
            raise ValueError(
                f"this looks like an API key itself ({value[:3]}…, {len(value)} characters); "
                "never write a key in the config: put it in an environment variable and give "
                "that variable's name, e.g. api_key_env: OPENAI_API_KEY"
            )
        if not _ENV_NAME.match(value):
            raise ValueError(
                f"{value!r} is not an environment variable name "
                "(letters, digits and _, not starting with a digit)"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value

    @field_validator("callable")
    @classmethod
    def _is_reference(cls, value: str | None) -> str | None:
        if value is not None and not _CALLABLE.match(value):
            raise ValueError(f"{value!r} is not a reference like package.module:function")
        return value

    @model_validator(mode="after")
    def _fits_type(self) -> ProviderSpec:
        if self.type == "command" and self.command is None:
            raise ValueError('type command needs `command`, e.g. command: "claude -p"')
        if self.type != "command" and self.command is not None:
            raise ValueError(f"`command` is only for type command (this one is {self.type})")
        if self.type == "python" and self.callable is None:
            raise ValueError("type python needs `callable`, e.g. callable: mypkg.agents:answer")
        if self.type != "python" and self.callable is not None:
            raise ValueError(f"`callable` is only for type python (this one is {self.type})")
        if self.cpu is not None and self.type != "python":
            raise ValueError(f"`cpu` is only for type python (this one is {self.type})")
        if self.base_url is not None and self.type not in ("openai", "anthropic"):
            raise ValueError(f"`base_url` is only for types openai and anthropic ({self.type})")
        return self

    def api_key(self, env: Mapping[str, str] | None = None) -> str | None:
        """The key from the environment variable named by `api_key_env` (None if unnamed).
        Raises `ConfigError` (without the key) when the variable is not set."""
        if self.api_key_env is None:
            return None
        value = (os.environ if env is None else env).get(self.api_key_env)
        if not value:
            raise ConfigError(
                f"the environment variable {self.api_key_env} (api_key_env of this "
                f"{self.type} provider) is not set; export it with your API key"
            )
        return value


def looks_like_key(value: str) -> bool:
    """Whether `value` looks like a secret rather than the name of a variable holding one."""
    if value.startswith(_KEY_PREFIXES) and len(value) >= 16:
        return True
    if len(value) < 20:
        return False
    if "_" not in value and any(c.isdigit() for c in value) and any(c.isalpha() for c in value):
        return True
    return not _ENV_NAME.match(value)
