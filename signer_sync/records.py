"""Record mapping: ListSigningJobs / DescribeSigningJob / ListSigningProfiles items as they
came over the wire -> typed rows for the warehouse.

Pure functions, no I/O. An item is either mapped (odd values become ``None`` and the raw
item keeps what came) or rejected with a reason; nothing here raises on bad input.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: Columns a ListSigningJobs item fills. ``job_id`` is the key.
LIST_COLUMNS: tuple[str, ...] = (
    "status",
    "is_revoked",
    "created_at",
    "signature_expires_at",
    "profile_name",
    "profile_version",
    "platform_id",
    "platform_display_name",
    "source_bucket",
    "source_key",
    "source_version",
    "signed_bucket",
    "signed_key",
    "certificate_arn",
    "job_owner",
    "job_invoker",
    "region",
    "source",
    "raw",
)
#: Columns only DescribeSigningJob fills; a listing never overwrites them.
DETAIL_COLUMNS: tuple[str, ...] = (
    "requested_by",
    "completed_at",
    "status_reason",
    "revoked_at",
    "revoked_by",
    "revocation_reason",
)

# Bounds that keep a value storable in every supported database.
_MIN_EPOCH = datetime(1970, 1, 1, tzinfo=UTC).timestamp()
_MAX_EPOCH = datetime(9999, 12, 31, tzinfo=UTC).timestamp()
MAX_TEXT = 4096
MAX_RAW_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class SigningJob:
    """One signing job as the warehouse stores it."""

    job_id: str
    values: Mapping[str, Any]
    """Column -> value for the columns this observation knows (list or detail columns)."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """An item that cannot be stored as a signing job; kept in ``rejected_records``."""

    reason: str
    payload: Any


@dataclass(frozen=True, slots=True)
class SigningProfile:
    profile_version_arn: str
    values: Mapping[str, Any] = field(default_factory=dict)


def parse_timestamp(value: Any) -> datetime | None:
    """Epoch seconds (number or numeric string) or ISO 8601 -> aware UTC datetime, else None.

    The wire format of timestamps is JSON numbers for this service, but another
    implementation may send strings; anything unparsable or out of range is ``None``.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                return None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            try:
                return parsed.astimezone(UTC)
            except (OverflowError, ValueError):
                return None
    else:
        return None
    if not math.isfinite(seconds) or not _MIN_EPOCH <= seconds <= _MAX_EPOCH:
        return None
    return datetime.fromtimestamp(seconds, tz=UTC)


def _text(value: Any) -> str | None:
    """A string column: strings kept (NULs dropped, length capped), scalars stringified."""
    if value is None or isinstance(value, dict | list):
        return None
    text = value if isinstance(value, str) else json.dumps(value)
    text = text.replace("\x00", "")
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text[:MAX_TEXT]


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _path(item: Mapping[str, Any], *keys: str) -> Any:
    node: Any = item
    for key in keys:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def clean_json(value: Any) -> Any:
    """A JSON value that every database accepts: no NUL characters, no lone surrogates,
    no NaN/Infinity (PostgreSQL's jsonb refuses all three)."""
    if isinstance(value, str):
        return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {clean_json(str(key)): clean_json(val) for key, val in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(val) for val in value]
    return value


def map_list_item(item: Any, *, region: str | None, source: str) -> SigningJob | Rejection:
    """Map one ListSigningJobs item. Only a missing or unusable ``jobId`` rejects it."""
    if not isinstance(item, Mapping):
        return Rejection("item is not a JSON object", clean_json(item))
    raw = clean_json(item)
    job_id = item.get("jobId")
    if not isinstance(job_id, str) or not job_id.strip():
        return Rejection("missing or empty jobId", raw)
    if len(job_id) > 256 or "\x00" in job_id:
        return Rejection("jobId longer than 256 characters or not text", raw)
    if len(json.dumps(raw)) > MAX_RAW_BYTES:
        return Rejection(f"item larger than {MAX_RAW_BYTES} bytes", _truncated(raw))
    values: dict[str, Any] = {
        "status": _text(item.get("status")),
        "is_revoked": _bool(item.get("isRevoked")),
        "created_at": parse_timestamp(item.get("createdAt")),
        "signature_expires_at": parse_timestamp(item.get("signatureExpiresAt")),
        "profile_name": _text(item.get("profileName")),
        "profile_version": _text(item.get("profileVersion")),
        "platform_id": _text(item.get("platformId")),
        "platform_display_name": _text(item.get("platformDisplayName")),
        "source_bucket": _text(_path(item, "source", "s3", "bucketName")),
        "source_key": _text(_path(item, "source", "s3", "key")),
        "source_version": _text(_path(item, "source", "s3", "version")),
        "signed_bucket": _text(_path(item, "signedObject", "s3", "bucketName")),
        "signed_key": _text(_path(item, "signedObject", "s3", "key")),
        "certificate_arn": _text(_path(item, "signingMaterial", "certificateArn")),
        "job_owner": _text(item.get("jobOwner")),
        "job_invoker": _text(item.get("jobInvoker")),
        "region": region,
        "source": source,
        "raw": raw,
    }
    return SigningJob(job_id=job_id, values=values)


def map_describe_item(item: Any) -> SigningJob | Rejection:
    """Map a DescribeSigningJob response to the detail columns (and the list columns it
    also carries, so a describe alone brings a job up to date)."""
    if not isinstance(item, Mapping):
        return Rejection("DescribeSigningJob answer is not a JSON object", clean_json(item))
    job_id = item.get("jobId")
    if not isinstance(job_id, str) or not job_id.strip():
        return Rejection("DescribeSigningJob answer without jobId", clean_json(item))
    values: dict[str, Any] = {
        "requested_by": _text(item.get("requestedBy")),
        "completed_at": parse_timestamp(item.get("completedAt")),
        "status_reason": _text(item.get("statusReason")),
        "revoked_at": parse_timestamp(_path(item, "revocationRecord", "revokedAt")),
        "revoked_by": _text(_path(item, "revocationRecord", "revokedBy")),
        "revocation_reason": _text(_path(item, "revocationRecord", "reason")),
    }
    status = _text(item.get("status"))
    if status is not None:
        values["status"] = status
    if isinstance(item.get("revocationRecord"), Mapping):
        values["is_revoked"] = True
    expires = parse_timestamp(item.get("signatureExpiresAt"))
    if expires is not None:
        values["signature_expires_at"] = expires
    return SigningJob(job_id=job_id, values=values)


def map_profile(item: Any) -> SigningProfile | Rejection:
    """Map one ListSigningProfiles item."""
    if not isinstance(item, Mapping):
        return Rejection("profile is not a JSON object", clean_json(item))
    raw = clean_json(item)
    arn = item.get("profileVersionArn")
    name = _text(item.get("profileName"))
    version = _text(item.get("profileVersion"))
    if not isinstance(arn, str) or not arn:
        if name is None:
            return Rejection("profile without profileName", raw)
        arn = f"{name}/{version or ''}"
    validity = item.get("signatureValidityPeriod")
    value = _path(item, "signatureValidityPeriod", "value")
    tags = item.get("tags")
    values = {
        "profile_name": name,
        "profile_version": version,
        "arn": _text(item.get("arn")),
        "platform_id": _text(item.get("platformId")),
        "platform_display_name": _text(item.get("platformDisplayName")),
        "status": _text(item.get("status")),
        "validity_value": value
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 100_000
        else None,
        "validity_type": _text(validity.get("type")) if isinstance(validity, Mapping) else None,
        "certificate_arn": _text(_path(item, "signingMaterial", "certificateArn")),
        "tags": clean_json(tags) if isinstance(tags, Mapping) else None,
        "raw": raw,
    }
    return SigningProfile(profile_version_arn=arn[:MAX_TEXT], values=values)


def _truncated(raw: Any) -> Any:
    text = json.dumps(raw)
    return {"truncated": text[:MAX_RAW_BYTES]}
