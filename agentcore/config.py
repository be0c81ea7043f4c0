"""Typed agent configuration: a TOML file with environment overrides.

The Ansible roles and the tests write the same file. Every agent extends
:class:`AgentConfig` with its own fields. Environment variables named
``KVMCLOUD_<FIELD>`` (``KVMCLOUD_TOKEN``, ``KVMCLOUD_CONTROLLER_URLS`` as a
JSON list) override the file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class AgentConfig(BaseSettings):
    """What every agent needs to run."""

    model_config = SettingsConfigDict(env_prefix="KVMCLOUD_", extra="forbid")

    listen: str = Field(default="127.0.0.1:7070", description="HOST:PORT to serve on")
    token: SecretStr = Field(description="bearer token the controller must present")
    state_dir: Path = Field(description="where the task journal and outbox live")
    controller_urls: list[str] = Field(
        default_factory=list,
        description="URL prefixes that callbacks and reports may be sent to",
    )
    workers: int = Field(default=8, ge=1, le=256, description="threads running commands")
    http_threads: int = Field(default=32, ge=1, le=512, description="gunicorn threads")
    max_queued: int = Field(default=20000, ge=1, description="queued tasks before 503")
    callback_senders: int = Field(
        default=8, ge=1, le=64,
        description="threads delivering callbacks; each waits for its POST's answer, so they bound the reply rate",
    )
    callback_max_age: float = Field(
        default=7 * 24 * 3600, gt=0, description="seconds a reply is retried before it is dropped"
    )
    task_retention: float = Field(default=3 * 24 * 3600, gt=0, description="seconds a finished task is kept")
    stop_grace: float = Field(
        default=10.0, gt=0,
        description="seconds a cancelled task may take to stop before it is abandoned and answered",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("listen must be HOST:PORT")
        return v

    @field_validator("token")
    @classmethod
    def _token(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) < 16:
            raise ValueError("token must be at least 16 characters")
        return v

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, v: Path) -> Path:
        if not v.is_absolute():
            raise ValueError("state_dir must be an absolute path")
        return v

    @field_validator("controller_urls")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"controller URL must be http(s): {url!r}")
        return [u.rstrip("/") for u in v]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)

    @classmethod
    def load(cls, path: str | Path | None, **overrides: Any) -> Self:
        """Read the TOML file (if any), apply env and ``overrides``, validate."""
        data: dict[str, Any] = {}
        if path is not None:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        data.update(overrides)
        return cls(**data)

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])
