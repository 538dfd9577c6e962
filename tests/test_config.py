"""Settings: every bad value is refused with a message that names the setting."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from signer_sync.config import load_settings, parse_duration
from signer_sync.errors import ConfigError


def test_defaults_are_the_embedded_sqlite_file() -> None:
    settings = load_settings(environ={})
    assert settings.is_sqlite and settings.url.database == "signer-sync.db"
    assert settings.table_schema is None
    assert settings.interval == timedelta(minutes=5)
    (source,) = settings.source_configs()
    assert source.name == "default" and source.endpoint_url is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("300", 300), ("90s", 90), ("5m", 300), ("2h", 7200), ("1d", 86400), (42, 42), ("1.5m", 90)],
)
def test_durations(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SIGNER_SYNC_DB_SCHEMA", 'signer"; DROP TABLE x; --'),
        ("SIGNER_SYNC_DB_SCHEMA", "Signer"),
        ("SIGNER_SYNC_INTERVAL", "five minutes"),
        ("SIGNER_SYNC_INTERVAL", "0"),
        ("SIGNER_SYNC_AWS_MAX_ATTEMPTS", "0"),
        ("SIGNER_SYNC_AWS_MAX_ATTEMPTS", "many"),
        ("SIGNER_SYNC_PAGE_SIZE", "26"),
        ("SIGNER_SYNC_CONCURRENCY", "-1"),
        ("SIGNER_SYNC_DATABASE_URL", "mysql://x@y/z"),
        ("SIGNER_SYNC_DATABASE_URL", "not a url"),
        ("SIGNER_SYNC_HTTP_ADDR", "localhost"),
        ("SIGNER_SYNC_LOG_FORMAT", "xml"),
        ("SIGNER_SYNC_BACKFILL_CRON", "every day"),
        ("SIGNER_SYNC_REGION", "mars-1"),
        ("SIGNER_SYNC_ENDPOINT_URL", "ftp://x"),
        ("SIGNER_SYNC_EXPIRY_MARGIN", "90d"),
    ],
)
def test_bad_environment_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={variable: value}).source_configs()
    assert variable in str(caught.value)
    if "DATABASE_URL" not in variable:
        assert value not in str(caught.value) or len(value) < 3


def test_database_url_password_never_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"SIGNER_SYNC_DATABASE_URL": "oracle://u:hunter2secret@h/db"})
    assert "hunter2secret" not in str(caught.value)
    settings = load_settings(
        environ={"SIGNER_SYNC_DATABASE_URL": "postgresql+psycopg://u:hunter2secret@h:5433/db"}
    )
    assert "hunter2secret" not in settings.redacted_url()
    assert "hunter2secret" not in repr(settings)


def test_toml_file_with_several_sources(tmp_path: Path) -> None:
    path = tmp_path / "signer-sync.toml"
    path.write_text(
        """
interval = "2m"

[[sources]]
name = "prod-us"
region = "us-east-1"
role_arn = "arn:aws:iam::111111111111:role/SignerSyncRead"
external_id = "s3cr3t-external"

[[sources]]
name = "prod-eu"
region = "eu-west-1"
platform_id = "AWSLambda-SHA384-ECDSA"
requests_per_second = 5
"""
    )
    settings = load_settings(path, environ={"SIGNER_SYNC_DB_SCHEMA": "inventory"})
    assert settings.interval == timedelta(minutes=2)
    assert settings.db_schema == "inventory"
    assert [s.name for s in settings.source_configs()] == ["prod-us", "prod-eu"]
    assert settings.source_configs()[1].list_filters() == {"platformId": "AWSLambda-SHA384-ECDSA"}
    assert "s3cr3t-external" not in repr(settings)
    assert settings.select_sources("prod-eu")[0].region == "eu-west-1"
    with pytest.raises(ConfigError, match="no source named 'nope'"):
        settings.select_sources("nope")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("bogus_key = 1\n", "bogus_key"),
        ('[[sources]]\nname = "a"\nregoin = "us-east-1"\n', "sources[0].regoin"),
        ('[[sources]]\nname = "a b"\n', "sources[0].name"),
        ('[[sources]]\nname = "a"\n[[sources]]\nname = "a"\n', "duplicate"),
        ('[[sources]]\nname = "a"\nrequests_per_second = "fast"\n', "requests_per_second"),
        ("interval = [1]\n", "interval"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_bad_toml_is_refused_with_the_key(tmp_path: Path, body: str, named: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert named in str(caught.value)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="SIGNER_SYNC_CONFIG: no such file"):
        load_settings(environ={"SIGNER_SYNC_CONFIG": "/nonexistent/signer-sync.toml"})
