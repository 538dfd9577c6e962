"""Configuration: environment variables (``SIGNER_SYNC_*``) and an optional TOML file.

Every setting is validated up front so that a wrong value is refused before
anything is written, with a message that names the setting (never its value
when the setting may hold a secret).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from importlib.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from signer_sync.errors import ConfigError

ENV_PREFIX = "SIGNER_SYNC_"
DEFAULT_DATABASE_URL = "sqlite:///signer-sync.db"
DEFAULT_SOURCE_NAME = "default"

#: Identifiers that end up in SQL (the schema) or in lock names must match this.
IDENTIFIER_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
SOURCE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> timedelta:
    """Parse ``300``, ``"300"``, ``"90s"``, ``"5m"``, ``"2h"`` or ``"1d"`` into a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 300, '90s', '5m', '2h' or '1d'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION_RE.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError("expected a duration such as 300, '90s', '5m', '2h' or '1d'")
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _source_name(value: str) -> str:
    if not SOURCE_NAME_RE.match(value):
        raise ValueError(
            "must be 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return value


def _region(value: str) -> str:
    if not re.match(r"^[a-z]{2}(-[a-z]+)+-\d+$", value):
        raise ValueError("is not an AWS region name such as 'us-east-1'")
    return value


SourceName = Annotated[str, AfterValidator(_source_name)]
Region = Annotated[str, AfterValidator(_region)]
RoleArn = Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$")]
EndpointUrl = Annotated[str, Field(pattern=r"^https?://[^\s]+$")]
RequestsPerSecond = Annotated[float, Field(gt=0, le=10_000)]


class SourceConfig(BaseModel):
    """One AWS account and region to read signing jobs from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: SourceName = DEFAULT_SOURCE_NAME
    region: Region | None = None
    aws_profile: str | None = None
    role_arn: RoleArn | None = None
    external_id: SecretStr | None = None
    role_session_name: str = "signer-sync"
    endpoint_url: EndpointUrl | None = None
    # Filters that narrow what this source reads. Only attributes that never change
    # for a job are offered, so that reconciliation stays exact.
    platform_id: str | None = None
    requested_by: str | None = None
    job_invoker: str | None = None
    requests_per_second: RequestsPerSecond = 20.0

    def list_filters(self) -> dict[str, str]:
        """The ListSigningJobs parameters every listing of this source carries."""
        filters = {
            "platformId": self.platform_id,
            "requestedBy": self.requested_by,
            "jobInvoker": self.job_invoker,
        }
        return {key: value for key, value in filters.items() if value is not None}


class Settings(BaseSettings):
    """All settings; environment variables use the ``SIGNER_SYNC_`` prefix."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        case_sensitive=False,
        validate_default=True,
        env_ignore_empty=True,
    )

    database_url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)
    db_schema: str = "signer"
    config: Path | None = None

    # AWS client behaviour
    aws_max_attempts: int = Field(default=8, ge=1, le=50)
    aws_connect_timeout: float = Field(default=10.0, gt=0, le=300)
    aws_read_timeout: float = Field(default=30.0, gt=0, le=600)
    page_size: int = Field(default=25, ge=1, le=25)

    # Incremental planning
    expiry_margin: Duration = timedelta(hours=1)
    failed_every: int = Field(default=1, ge=1, le=10_000)
    revoked_every: int = Field(default=1, ge=1, le=10_000)

    # Throughput
    concurrency: int = Field(default=4, ge=1, le=64)
    backfill_partitions: bool = True
    batch_size: int = Field(default=1000, ge=1, le=50_000)

    # Daemon
    interval: Duration = timedelta(minutes=5)
    backfill_cron: str = "17 3 * * *"
    max_parallel_sources: int = Field(default=4, ge=1, le=64)
    http_addr: str = "127.0.0.1:9108"
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Single-source settings (used when the TOML file lists no sources)
    source_name: SourceName = DEFAULT_SOURCE_NAME
    region: Region | None = None
    aws_profile: str | None = None
    role_arn: RoleArn | None = None
    external_id: SecretStr | None = None
    endpoint_url: EndpointUrl | None = None
    platform_id: str | None = None
    requested_by: str | None = None
    job_invoker: str | None = None
    requests_per_second: RequestsPerSecond = 20.0

    sources: tuple[SourceConfig, ...] = ()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlFile(settings_cls, _CONFIG_FILE.get()))

    @field_validator("db_schema")
    @classmethod
    def _schema_is_identifier(cls, value: str) -> str:
        if not IDENTIFIER_RE.match(value):
            raise ValueError(
                "must be a lower-case SQL identifier: letters, digits and '_', "
                "starting with a letter or '_', at most 63 characters"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _url_parses(cls, value: SecretStr) -> SecretStr:
        try:
            url = make_url(value.get_secret_value())
        except (ArgumentError, ValueError):
            raise ValueError(
                "is not a SQLAlchemy URL such as "
                "'postgresql+psycopg://user@host:5432/db' or 'sqlite:///signer-sync.db'"
            ) from None
        if url.get_backend_name() not in ("postgresql", "sqlite"):
            raise ValueError("must point at PostgreSQL or SQLite")
        return value

    @field_validator("interval")
    @classmethod
    def _interval_sane(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(days=7):
            raise ValueError("must be between 1 second and 7 days")
        return value

    @field_validator("expiry_margin")
    @classmethod
    def _margin_sane(cls, value: timedelta) -> timedelta:
        if not timedelta(0) <= value <= timedelta(days=30):
            raise ValueError("must be between 0 and 30 days")
        return value

    @field_validator("backfill_cron")
    @classmethod
    def _cron_parses(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        if value.strip().lower() in ("", "off"):
            return "off"
        try:
            CronTrigger.from_crontab(value)
        except ValueError as exc:
            raise ValueError(f"is not a crontab expression ({exc})") from None
        return value

    @field_validator("http_addr")
    @classmethod
    def _addr_shape(cls, value: str) -> str:
        if value == "":
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be host:port, such as 127.0.0.1:9108, or empty to turn it off")
        return value

    @model_validator(mode="after")
    def _sources_unique(self) -> Settings:
        names = [source.name for source in self.sources]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"sources: duplicate source name(s) {', '.join(duplicates)}")
        return self

    # -- derived -------------------------------------------------------------------------

    @property
    def url(self) -> URL:
        return make_url(self.database_url.get_secret_value())

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def table_schema(self) -> str | None:
        """The schema tables live in; SQLite has none."""
        return None if self.is_sqlite else self.db_schema

    def redacted_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def source_configs(self) -> tuple[SourceConfig, ...]:
        """The configured sources: the TOML file's list, else the single env-defined one."""
        if self.sources:
            return self.sources
        return (
            SourceConfig(
                name=self.source_name,
                region=self.region,
                aws_profile=self.aws_profile,
                role_arn=self.role_arn,
                external_id=self.external_id,
                endpoint_url=self.endpoint_url,
                platform_id=self.platform_id,
                requested_by=self.requested_by,
                job_invoker=self.job_invoker,
                requests_per_second=self.requests_per_second,
            ),
        )

    def select_sources(self, name: str | None) -> tuple[SourceConfig, ...]:
        sources = self.source_configs()
        if name is None:
            return sources
        chosen = tuple(source for source in sources if source.name == name)
        if not chosen:
            known = ", ".join(source.name for source in sources)
            raise ConfigError(f"--source: no source named {name!r} (configured: {known})")
        return chosen


_CONFIG_FILE: ContextVar[Path | None] = ContextVar("signer_sync_config_file", default=None)


class _TomlFile(TomlConfigSettingsSource):
    """The TOML file, read at validation time; settings may sit at the top level or under
    a ``[signer_sync]`` table, sources under ``[[sources]]``."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls, toml_file=path)

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        values = dict(super()._read_file(file_path))
        nested = values.pop("signer_sync", None)
        if isinstance(nested, dict):
            values = {**nested, **values}
        return values


def _describe_errors(exc: ValidationError, environ: Mapping[str, str], path: Path | None) -> str:
    """One clause per bad setting, naming the variable or file key, never the value."""
    clauses = []
    for error in exc.errors():
        parts = [str(part) for part in error["loc"]]
        field = parts[0] if parts else ""
        env_name = f"{ENV_PREFIX}{field.upper()}"
        if field == "sources" and len(parts) > 1:
            setting = f"{path}: sources[{parts[1]}]" + "".join(f".{p}" for p in parts[2:])
        elif field and environ.get(env_name, "") != "":
            setting = env_name
        elif path is not None and field:
            setting = f"{path}: {'.'.join(parts)}"
        else:
            setting = ".".join(parts) or "configuration"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        clauses.append(f"{setting}: {message}")
    return "; ".join(clauses)


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build the settings: explicit overrides, then ``SIGNER_SYNC_*`` variables, then the
    TOML file (``--config`` or ``SIGNER_SYNC_CONFIG``).

    Raises :class:`ConfigError` naming each bad setting.
    """
    env = os.environ if environ is None else environ
    configured = env.get(f"{ENV_PREFIX}CONFIG") or None
    path = config_file or (Path(configured) if configured else None)
    if path is not None:
        try:
            tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{ENV_PREFIX}CONFIG: no such file {str(path)!r}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{ENV_PREFIX}CONFIG: cannot read {str(path)!r}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{ENV_PREFIX}CONFIG: {path} is not valid TOML: {exc}") from None
    token = _CONFIG_FILE.set(path)
    try:
        if environ is None:
            return Settings(**overrides)
        with _patched_environ(environ):
            return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe_errors(exc, env, path)) from None
    finally:
        _CONFIG_FILE.reset(token)


@contextmanager
def _patched_environ(environ: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
