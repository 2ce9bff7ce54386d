"""The daemon's configuration: defaults, then a TOML file, then ``TRIGGERFISH_*`` variables.

Example ``triggerfish.toml``::

    data_dir = "/var/lib/triggerfish"   # the sqlite file, codebases, the local client key
    store = "postgresql://triggerfish:secret@db.internal/triggerfish"   # default: a sqlite
                                        # file in data_dir
    host = "127.0.0.1"
    port = 8765
    api_keys = ["sha256:..."]           # hashes only; make a key with 'triggerfish keys create'
    max_body_bytes = 67108864
    drain_timeout = 30

    [runtime]                           # for deployed services whose JSON does not say
    concurrency = 4
    min_replicas = 1
    max_replicas = 2

Each field can also come from the environment: ``TRIGGERFISH_HOST``, ``TRIGGERFISH_PORT``,
``TRIGGERFISH_API_KEYS`` (comma-separated hashes), and so on; the environment wins over the
file (``TRIGGERFISH_RUNTIME`` takes the table as JSON). A bind to anything but a loopback
address is refused unless API keys are configured.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import ConfigurationError
from ..store.dsn import describe_dsn, is_postgres_dsn
from .auth import check_hash

__all__ = ["DaemonConfig", "load_config"]

ENV_PREFIX = "TRIGGERFISH_"


class RuntimeDefaults(BaseModel):
    """The runtime of a deployed service whose service JSON leaves it out."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrency: int = Field(default=1, ge=1, le=10000)
    min_replicas: int = Field(default=1, ge=0, le=1000)
    max_replicas: int = Field(default=1, ge=1, le=1000)

    def fill(self, definition: dict[str, Any]) -> dict[str, Any]:
        """``definition`` (a service JSON) with these where its runtime says nothing."""
        runtime = definition.get("runtime") or {}
        autoscaler = runtime.get("autoscaler") or {} if isinstance(runtime, dict) else None
        if not isinstance(runtime, dict) or not isinstance(autoscaler, dict):
            return definition  # left for the service JSON's validation to refuse
        least = autoscaler.get("minReplicas", self.min_replicas)
        most = self.max_replicas
        if isinstance(least, int) and least > most:
            most = least  # a JSON asking for more replicas than the default maximum
        autoscaler = {"minReplicas": self.min_replicas, "maxReplicas": most, **autoscaler}
        runtime = {"concurrency": self.concurrency, **runtime, "autoscaler": autoscaler}
        return {**definition, "runtime": runtime}


class DaemonConfig(BaseModel):
    """Everything ``triggerfish serve`` needs. Build with ``load_config``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Path(".triggerfish")
    # A sqlite file, or a PostgreSQL URL (postgresql://...); default: data_dir / "triggerfish.db"
    store: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    api_keys: tuple[str, ...] = ()
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    drain_timeout: float = Field(default=30.0, ge=0)
    kill_grace: float = Field(default=5.0, ge=0)
    app: str | None = None  # "module:function", called with the Engine to register functions
    runtime: RuntimeDefaults = Field(default_factory=RuntimeDefaults)

    @field_validator("api_keys")
    @classmethod
    def _hashes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_hash(entry) for entry in value)

    @property
    def store_target(self) -> str | Path:
        """What the engine is given: the PostgreSQL URL, or the sqlite file's path."""
        if is_postgres_dsn(self.store):
            return str(self.store)
        return Path(self.store) if self.store else self.data_dir / "triggerfish.db"

    @property
    def store_file(self) -> Path | None:
        """The sqlite file, or None on PostgreSQL."""
        target = self.store_target
        return target if isinstance(target, Path) else None

    @property
    def store_name(self) -> str:
        """The store, for messages: its file, or its server without the password."""
        target = self.store_target
        return str(target) if isinstance(target, Path) else describe_dsn(target)

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def check_bind(self) -> None:
        """Refuse to listen beyond this machine with no API key configured."""
        if not self.loopback and not self.api_keys:
            raise ConfigurationError(
                f"host {self.host!r} is not a loopback address and no API key is configured: "
                "set api_keys (or TRIGGERFISH_API_KEYS) before listening on the network"
            )


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> DaemonConfig:
    """Defaults, then the TOML file at ``path`` (or ``$TRIGGERFISH_CONFIG``), then the
    environment, then ``overrides`` (command-line flags; None values are ignored)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = path or environ.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            values.update(tomllib.loads(Path(path).read_text()))
        except OSError as exc:
            raise ConfigurationError(f"cannot read the config file {path}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"config file {path}: {exc}") from None
    for name in DaemonConfig.model_fields:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        if name == "api_keys":
            values[name] = [k.strip() for k in raw.split(",") if k.strip()]
        elif name == "runtime":
            try:
                values[name] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigurationError(f"{ENV_PREFIX}RUNTIME is not JSON: {exc}") from None
        else:
            values[name] = raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return DaemonConfig.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        message = str(first["msg"]).removeprefix("Value error, ")
        if message.startswith(f"{where}:"):  # the validator named the field already
            raise ConfigurationError(message) from None
        raise ConfigurationError(f"{where}: {message}") from None
