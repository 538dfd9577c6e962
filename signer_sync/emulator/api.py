"""The Signer REST-JSON operations: routing, parameter validation, opaque page tokens.

Kept apart from the HTTP server so the protocol rules (what is a ValidationException,
how a nextToken is bound to its filters) can be read in one place.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from signer_sync.emulator.world import JOB_STATUSES, PROFILE_STATUSES, JobFilter, World

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "ERROR_STATUS",
    "ApiError",
    "TokenCodec",
    "dispatch",
    "error_body",
    "route",
]

#: Page size when maxResults is absent: deliberately not 10, 25 or 100.
DEFAULT_PAGE_SIZE = 7
MAX_PAGE_SIZE = 25

#: HTTP status for each error code the emulator emits.
ERROR_STATUS: dict[str, int] = {
    "ValidationException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "UnknownOperationException": 404,
    "TooManyRequestsException": 429,
    "InternalServiceErrorException": 500,
}

_ACCOUNT_RE = re.compile(r"^[0-9]{12}$")
Query = Mapping[str, Sequence[str]]


class ApiError(Exception):
    """An AWS error response: code (x-amzn-ErrorType), message and HTTP status."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status if status is not None else ERROR_STATUS.get(code, 400)


def error_body(code: str, message: str) -> dict[str, Any]:
    """The JSON error document; ``__type`` and ``code`` let any botocore version map it."""
    return {"__type": code, "code": code, "message": message}


def route(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    """Map a request line to (operation name, path parameters), or None if unknown."""
    if method != "GET":
        return None
    parts = path.split("/")
    if len(parts) == 2 and parts[1] == "signing-jobs":
        return "ListSigningJobs", {}
    if len(parts) == 3 and parts[1] == "signing-jobs" and parts[2]:
        return "DescribeSigningJob", {"jobId": unquote(parts[2])}
    if len(parts) == 2 and parts[1] == "signing-profiles":
        return "ListSigningProfiles", {}
    if len(parts) == 2 and parts[1] == "signing-platforms":
        return "ListSigningPlatforms", {}
    return None


class TokenCodec:
    """Opaque nextTokens: urlsafe base64 of HMAC(tag) + JSON(operation, filters, cursor).

    A token only works for the operation and the exact filter set it was issued for, so
    a client that changes filters mid-pagination (or mangles the token) gets a
    ValidationException instead of a silently inconsistent listing.
    """

    _MAC_LEN = 16

    def __init__(self, key: bytes) -> None:
        self._key = key

    def issue(self, operation: str, fingerprint: str, after: bytes) -> str:
        payload = json.dumps(
            {"o": operation, "f": fingerprint, "k": after.hex()}, separators=(",", ":")
        ).encode()
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()[: self._MAC_LEN]
        return base64.urlsafe_b64encode(mac + payload).decode().rstrip("=")

    def read(self, token: str, operation: str, fingerprint: str) -> bytes:
        """The cursor inside ``token``; ApiError if forged, garbled or for other filters."""
        invalid = ApiError("ValidationException", "Invalid nextToken")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise invalid from None
        mac, payload = raw[: self._MAC_LEN], raw[self._MAC_LEN :]
        expected = hmac.new(self._key, payload, hashlib.sha256).digest()[: self._MAC_LEN]
        if len(mac) != self._MAC_LEN or not hmac.compare_digest(mac, expected):
            raise invalid
        try:
            data = json.loads(payload)
            if data["o"] != operation or data["f"] != fingerprint:
                raise invalid
            return bytes.fromhex(data["k"])
        except (ValueError, KeyError, TypeError):
            raise invalid from None


def _one(query: Query, name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _constraint(name: str, value: str, constraint: str) -> ApiError:
    return ApiError(
        "ValidationException",
        f"1 validation error detected: Value '{value}' at '{name}' failed to satisfy "
        f"constraint: {constraint}",
    )


def _max_results(query: Query) -> int:
    raw = _one(query, "maxResults")
    if raw is None:
        return DEFAULT_PAGE_SIZE
    try:
        value = int(raw)
    except ValueError:
        raise _constraint("maxResults", raw, "Member must be an integer") from None
    if value < 1:
        raise _constraint("maxResults", raw, "Member must have value greater than or equal to 1")
    if value > MAX_PAGE_SIZE:
        raise _constraint(
            "maxResults", raw, f"Member must have value less than or equal to {MAX_PAGE_SIZE}"
        )
    return value


def _bool(query: Query, name: str) -> bool | None:
    raw = _one(query, name)
    if raw is None:
        return None
    if raw in ("true", "false"):
        return raw == "true"
    raise _constraint(name, raw, "Member must be a boolean ('true' or 'false')")


def _instant(query: Query, name: str) -> datetime | None:
    """Parse a query timestamp: ISO 8601 (botocore's choice) or epoch seconds."""
    raw = _one(query, name)
    if raw is None:
        return None
    try:
        number = float(raw)
    except ValueError:
        pass
    else:
        if math.isfinite(number):
            try:
                return datetime.fromtimestamp(number, UTC)
            except (OverflowError, OSError, ValueError):
                pass
        raise _constraint(name, raw, "Member must be a valid timestamp")
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise _constraint(name, raw, "Member must be a valid timestamp") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _job_filter(query: Query) -> JobFilter:
    status = _one(query, "status")
    if status is not None and status not in JOB_STATUSES:
        raise _constraint(
            "status", status, f"Member must satisfy enum value set: [{', '.join(JOB_STATUSES)}]"
        )
    invoker = _one(query, "jobInvoker")
    if invoker is not None and not _ACCOUNT_RE.match(invoker):
        raise _constraint(
            "jobInvoker", invoker, "Member must satisfy regular expression pattern: ^[0-9]{12}$"
        )
    return JobFilter(
        status=status,
        platform_id=_one(query, "platformId"),
        requested_by=_one(query, "requestedBy"),
        is_revoked=_bool(query, "isRevoked"),
        expires_before=_instant(query, "signatureExpiresBefore"),
        expires_after=_instant(query, "signatureExpiresAfter"),
        job_invoker=invoker,
    )


def _cursor(codec: TokenCodec, query: Query, operation: str, fingerprint: str) -> bytes | None:
    token = _one(query, "nextToken")
    return None if token is None else codec.read(token, operation, fingerprint)


def _with_token(
    body: dict[str, Any],
    codec: TokenCodec,
    operation: str,
    fingerprint: str,
    after: bytes | None,
) -> dict[str, Any]:
    if after is not None:
        body["nextToken"] = codec.issue(operation, fingerprint, after)
    return body


def dispatch(
    world: World, operation: str, params: Mapping[str, str], query: Query
) -> dict[str, Any]:
    """Run one operation against the world and return its JSON body (or raise ApiError)."""
    codec = TokenCodec(world.token_key)
    if operation == "ListSigningJobs":
        flt = _job_filter(query)
        limit = _max_results(query)
        fp = flt.fingerprint()
        jobs, after = world.page_jobs(flt, _cursor(codec, query, operation, fp), limit)
        return _with_token({"jobs": jobs}, codec, operation, fp, after)
    if operation == "DescribeSigningJob":
        job_id = params["jobId"]
        described = world.describe(job_id)
        if described is None:
            raise ApiError("ResourceNotFoundException", f"Signing job {job_id} does not exist")
        return described
    if operation == "ListSigningProfiles":
        statuses = list(query.get("statuses", ()))
        for status in statuses:
            if status not in PROFILE_STATUSES:
                raise _constraint(
                    "statuses",
                    status,
                    f"Member must satisfy enum value set: [{', '.join(PROFILE_STATUSES)}]",
                )
        include_canceled = bool(_bool(query, "includeCanceled"))
        platform_id = _one(query, "platformId")
        limit = _max_results(query)
        fp = hashlib.sha256(
            json.dumps([include_canceled, platform_id, sorted(statuses)]).encode()
        ).hexdigest()[:24]
        profiles, after = world.page_profiles(
            include_canceled=include_canceled,
            platform_id=platform_id,
            statuses=statuses or None,
            after=_cursor(codec, query, operation, fp),
            limit=limit,
        )
        return _with_token({"profiles": profiles}, codec, operation, fp, after)
    if operation == "ListSigningPlatforms":
        category, partner, target = (
            _one(query, "category"),
            _one(query, "partner"),
            _one(query, "target"),
        )
        limit = _max_results(query)
        fp = hashlib.sha256(json.dumps([category, partner, target]).encode()).hexdigest()[:24]
        platforms, after = world.page_platforms(
            category=category,
            partner=partner,
            target=target,
            after=_cursor(codec, query, operation, fp),
            limit=limit,
        )
        return _with_token({"platforms": platforms}, codec, operation, fp, after)
    raise ApiError("UnknownOperationException", f"Unknown operation {operation}")
