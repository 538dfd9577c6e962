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
_MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_TIME = datetime(9999, 12, 31, tzinfo=UTC)
_MIN_EPOCH = _MIN_TIME.timestamp()
_MAX_EPOCH = _MAX_TIME.timestamp()
MAX_TEXT = 4096
#: UTF-8 bytes of a text value that goes into a btree index (job id, status, profile name
#: and version, profile version ARN): PostgreSQL refuses an index entry larger than a third
#: of a page (2704 bytes), and random unicode does not compress.
MAX_INDEXED_BYTES = 1024
MAX_RAW_BYTES = 256 * 1024
#: Items nested deeper than this are quarantined (Signer items nest four levels); deeper
#: JSON would exhaust the recursion of the JSON encoders on the way to the database.
MAX_DEPTH = 32


@dataclass(frozen=True, slots=True)
class SigningJob:
    """One signing job as the warehouse stores it."""

    job_id: str
    values: Mapping[str, Any]
    """Column -> value for the columns this observation knows (list or detail columns)."""
    raw_json: str | None = None
    """``values["raw"]`` as JSON text, when mapping produced it: written as is, not again."""


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
        return _in_range(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # a JSON integer no float can hold
            return None
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
            return _in_range(parsed)
    else:
        return None
    if not math.isfinite(seconds) or not _MIN_EPOCH <= seconds <= _MAX_EPOCH:
        return None
    return datetime.fromtimestamp(seconds, tz=UTC)


def _in_range(moment: datetime) -> datetime | None:
    """An aware datetime in UTC if it lies in 1970..9999 (as epoch seconds must), else None."""
    try:
        moment = moment.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    return moment if _MIN_TIME <= moment <= _MAX_TIME else None


def _text(value: Any, max_bytes: int | None = None) -> str | None:
    """A string column: strings kept (NULs dropped, lone surrogates replaced, length capped,
    to ``max_bytes`` of UTF-8 for indexed columns), scalars stringified."""
    if value is None or isinstance(value, dict | list):
        return None
    text = value if isinstance(value, str) else json.dumps(value)
    text = text.replace("\x00", "")
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = text[:MAX_TEXT]
    if max_bytes is not None:
        encoded = text.encode("utf-8")
        if len(encoded) > max_bytes:
            text = encoded[:max_bytes].decode("utf-8", "ignore")
    return text


def _job_id_problem(job_id: Any) -> str | None:
    """Why ``job_id`` cannot be a primary key, or None when it can."""
    if not isinstance(job_id, str) or not job_id.strip():
        return "missing or empty jobId"
    if len(job_id) > 256 or "\x00" in job_id or not _encodable(job_id):
        return "jobId longer than 256 characters or not text"
    return None


def _encodable(text: str) -> bool:
    """False for strings with lone surrogates, which no database driver can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when objects or arrays nest deeper than ``limit`` (checked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Mapping):
            children: list[Any] = list(node.values())
        elif isinstance(node, list | tuple):
            children = list(node)
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _quarantined(item: Any) -> Any:
    """A rejected item as ``rejected_records`` keeps it: cleaned, or - when it is too big
    or too deep to store as JSON - the start of its JSON text, cut so that the payload
    stays under MAX_RAW_BYTES even with every character escaped once more."""
    if not _too_deep(item):
        payload = clean_json(item)
        text = json.dumps(payload)
        if len(text) <= MAX_RAW_BYTES:
            return payload
    else:
        try:  # NUL and lone surrogates come out as \u escapes, so the text is storable
            text = json.dumps(item)
        except (RecursionError, ValueError):
            text = f"(nested deeper than {MAX_DEPTH} levels)"
    return {"truncated": text[: MAX_RAW_BYTES // 2]}


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
    if _is_clean(value):  # the common case, one C-speed pass instead of a walk
        return value
    return _cleaned(value)


def _is_clean(value: Any) -> bool:
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")  # lone surrogates fail here
    except (TypeError, ValueError, UnicodeEncodeError, RecursionError):
        return False
    return "\\u0000" not in text


def _cleaned(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {_cleaned(str(key)): _cleaned(val) for key, val in value.items()}
    if isinstance(value, list | tuple):
        return [_cleaned(val) for val in value]
    return value


def map_list_item(item: Any, *, region: str | None, source: str) -> SigningJob | Rejection:
    """Map one ListSigningJobs item. Only a missing or unusable ``jobId`` rejects it."""
    if not isinstance(item, Mapping):
        return Rejection("item is not a JSON object", _quarantined(item))
    job_id = item.get("jobId")
    problem = _job_id_problem(job_id)
    if problem is not None:
        return Rejection(problem, _quarantined(item))
    assert isinstance(job_id, str)  # checked by _job_id_problem
    raw_json = _plain_json(item)
    if raw_json is not None:  # the common case: one serialisation, no walk
        raw: Any = item
    else:
        if _too_deep(item):
            return Rejection(f"item nested deeper than {MAX_DEPTH} levels", _quarantined(item))
        raw = clean_json(item)
        if len(json.dumps(raw)) > MAX_RAW_BYTES:
            return Rejection(f"item larger than {MAX_RAW_BYTES} bytes", _quarantined(raw))
    values: dict[str, Any] = {
        "status": _text(item.get("status"), MAX_INDEXED_BYTES),
        "is_revoked": _bool(item.get("isRevoked")),
        "created_at": parse_timestamp(item.get("createdAt")),
        "signature_expires_at": parse_timestamp(item.get("signatureExpiresAt")),
        "profile_name": _text(item.get("profileName"), MAX_INDEXED_BYTES),
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
    return SigningJob(job_id=job_id, values=values, raw_json=raw_json)


def _plain_json(item: Any) -> str | None:
    """The item's JSON text when it needs no cleaning: no NUL, no lone surrogate, no NaN,
    within the size limit, and with fewer brackets than MAX_DEPTH (so it cannot nest
    deeper). None sends the item down the careful path."""
    try:
        text = json.dumps(item, allow_nan=False)  # ASCII: a surrogate shows as \udXXX
    except (TypeError, ValueError, RecursionError):
        return None
    if (
        len(text) > MAX_RAW_BYTES
        or "\\u0000" in text
        or "\\ud" in text
        or text.count("{") + text.count("[") > MAX_DEPTH
    ):
        return None
    return text


def map_describe_item(item: Any) -> SigningJob | Rejection:
    """Map a DescribeSigningJob response to the detail columns (and the list columns it
    also carries, so a describe alone brings a job up to date)."""
    if not isinstance(item, Mapping):
        return Rejection("DescribeSigningJob answer is not a JSON object", _quarantined(item))
    job_id = item.get("jobId")
    problem = _job_id_problem(job_id)
    if problem is not None:
        return Rejection(f"DescribeSigningJob answer: {problem}", _quarantined(item))
    assert isinstance(job_id, str)  # checked by _job_id_problem
    values: dict[str, Any] = {
        "requested_by": _text(item.get("requestedBy")),
        "completed_at": parse_timestamp(item.get("completedAt")),
        "status_reason": _text(item.get("statusReason")),
        "revoked_at": parse_timestamp(_path(item, "revocationRecord", "revokedAt")),
        "revoked_by": _text(_path(item, "revocationRecord", "revokedBy")),
        "revocation_reason": _text(_path(item, "revocationRecord", "reason")),
    }
    status = _text(item.get("status"), MAX_INDEXED_BYTES)
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
        return Rejection("profile is not a JSON object", _quarantined(item))
    if _too_deep(item):
        return Rejection(f"profile nested deeper than {MAX_DEPTH} levels", _quarantined(item))
    raw = clean_json(item)
    if len(json.dumps(raw)) > MAX_RAW_BYTES:
        return Rejection(f"profile larger than {MAX_RAW_BYTES} bytes", _quarantined(raw))
    given_arn = item.get("profileVersionArn")
    arn = _text(given_arn, MAX_INDEXED_BYTES) if isinstance(given_arn, str) else None
    name = _text(item.get("profileName"), MAX_INDEXED_BYTES)
    version = _text(item.get("profileVersion"), MAX_INDEXED_BYTES)
    if not arn:
        if name is None:
            return Rejection("profile without profileName", raw)
        arn = _text(f"{name}/{version or ''}", MAX_INDEXED_BYTES) or "/"
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
    return SigningProfile(profile_version_arn=arn, values=values)
