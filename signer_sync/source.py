"""The Signer API source: a thin I/O edge over a boto3 ``signer`` client.

Successful response bodies are taken as raw JSON before botocore parses them, so that
``raw`` in the warehouse is the item exactly as received and one odd record (a string
where a timestamp belongs, an item that is not an object) cannot fail a whole page.
Every HTTP attempt is rate-limited per source and counted by operation and error code.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.session
from botocore.config import Config as BotoConfig
from botocore.credentials import RefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError
from botocore.parsers import ResponseParserError

from signer_sync.config import Settings, SourceConfig
from signer_sync.errors import ConfigError, SignerSyncError

log = logging.getLogger(__name__)

THROTTLE_CODES = frozenset(
    {"TooManyRequestsException", "ThrottlingException", "Throttling", "RequestLimitExceeded"}
)
#: Errors worth a further round of retries once botocore's attempts are spent.
_TRANSIENT_CODES = THROTTLE_CODES | {"InternalServiceErrorException", "ServiceUnavailable"}
_EXTRA_ROUNDS = 2
_RAW_OPERATIONS = ("ListSigningJobs", "DescribeSigningJob", "ListSigningProfiles")


class MalformedResponse(SignerSyncError):
    """A 2xx answer whose body is not the JSON object the operation promises."""


@dataclass(frozen=True, slots=True)
class Page:
    """One ListSigningJobs page: the raw items, and whether a nextToken followed."""

    jobs: list[Any]
    more: bool


class AssumeRoleFailed(SignerSyncError):
    """The source's role could not be assumed: STS refused, or could not be reached."""

    hint = "check the role's trust policy, the source's external_id and the STS endpoint"


class Interrupted(SignerSyncError):
    """The run was asked to stop (SIGTERM/SIGINT) between two pages."""


class RequestRate:
    """A token bucket per source, slowed down when the API throttles us (AIMD).

    Keeps one busy account from taking the request budget of the others and backs off
    on throttling beyond what botocore's own retry delays do.
    """

    def __init__(self, per_second: float, *, burst: float | None = None) -> None:
        self.ceiling = per_second
        self.rate = per_second
        self.burst = burst if burst is not None else max(1.0, per_second)
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.rate
            time.sleep(wait)

    def throttled(self) -> None:
        with self._lock:
            self.rate = max(self.ceiling / 64, self.rate / 2)

    def succeeded(self) -> None:
        with self._lock:
            if self.rate < self.ceiling:
                self.rate = min(self.ceiling, self.rate + self.ceiling / 20)


class SignerApi:
    """ListSigningJobs, DescribeSigningJob and ListSigningProfiles for one source."""

    def __init__(
        self,
        source: SourceConfig,
        settings: Settings,
        *,
        session: boto3.Session | None = None,
    ) -> None:
        self.source = source
        self.page_size = settings.page_size
        self.malformed_attempts = settings.aws_max_attempts
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._counter_lock = threading.Lock()
        self.rate = RequestRate(source.requests_per_second)
        session = session or _session_for(source)
        config = BotoConfig(
            retries={"mode": "standard", "total_max_attempts": settings.aws_max_attempts},
            connect_timeout=settings.aws_connect_timeout,
            read_timeout=settings.aws_read_timeout,
            max_pool_connections=max(10, settings.concurrency * 2),
            user_agent_extra="signer-sync",
        )
        kwargs: dict[str, Any] = {"config": config}
        if source.region:
            kwargs["region_name"] = source.region
        if source.endpoint_url:  # otherwise botocore honours AWS_ENDPOINT_URL_SIGNER itself
            kwargs["endpoint_url"] = source.endpoint_url
        try:
            self.client = session.client("signer", **kwargs)
        except NoRegionError:
            raise ConfigError(
                f"source {source.name!r}: no AWS region",
                hint="set region in the source, or AWS_REGION / SIGNER_SYNC_REGION",
            ) from None
        self.region: str = self.client.meta.region_name
        events = self.client.meta.events
        events.register("before-send.signer.*", self._before_send)
        events.register("needs-retry.signer.*", self._count_outcome)
        for operation in _RAW_OPERATIONS:
            events.register(f"before-parse.signer.{operation}", self._take_raw_body)

    # -- hooks ---------------------------------------------------------------------------

    def _before_send(self, event_name: str, **_: Any) -> None:
        self.rate.acquire()
        with self._counter_lock:
            self.calls[event_name.rsplit(".", 1)[-1]] += 1

    def _count_outcome(
        self,
        response: tuple[Any, Mapping[str, Any]] | None = None,
        caught_exception: BaseException | None = None,
        **_: Any,
    ) -> None:
        code: str | None = None
        if caught_exception is not None:
            code = type(caught_exception).__name__
        elif response is not None:
            http, parsed = response
            if getattr(http, "status_code", 200) >= 300:
                code = str(parsed.get("Error", {}).get("Code") or http.status_code)
        if code is None:
            self.rate.succeeded()
            return
        with self._counter_lock:
            self.errors[code] += 1
        if code in THROTTLE_CODES:
            self.rate.throttled()

    def _take_raw_body(
        self,
        operation_model: Any,
        response_dict: dict[str, Any],
        customized_response_dict: dict[str, Any],
        **_: Any,
    ) -> None:
        if not 200 <= response_dict.get("status_code", 0) < 300:
            return
        try:
            body = json.loads(response_dict["body"] or b"{}")
        except (ValueError, UnicodeDecodeError, RecursionError):  # nested beyond the parser
            body = None
        if not isinstance(body, dict):
            with self._counter_lock:
                self.errors["MalformedResponse"] += 1
            raise MalformedResponse(
                f"{operation_model.name}: the Signer API answered with a body that is "
                "not a JSON object"
            )
        customized_response_dict["RawBody"] = body
        response_dict["body"] = b"{}"

    # -- calls ---------------------------------------------------------------------------

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        """One request, retried beyond botocore's own attempts for a malformed body, and
        for throttling or server errors that outlasted them (a long storm should slow a
        run down, not fail it and make the next run read the same pages again)."""
        method = getattr(self.client, _snake(operation))
        malformed = rounds = 0
        while True:
            try:
                response = method(**params)
            except MalformedResponse:
                malformed += 1
                if malformed >= self.malformed_attempts:
                    raise
                _pause(malformed)
                continue
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code not in _TRANSIENT_CODES or rounds >= _EXTRA_ROUNDS:
                    raise
                rounds += 1
                log.warning("%s: %s after botocore's retries; trying again", operation, code)
                _pause(rounds + 3)
                continue
            body: dict[str, Any] = response.get("RawBody", {})
            return body

    def list_jobs(
        self, filters: Mapping[str, Any], *, stop: threading.Event | None = None
    ) -> Generator[Page, None, None]:
        """Yield every page of one listing: its raw ``jobs`` and whether more follow.

        A nextToken refused mid-listing (ValidationException) restarts the listing from the
        first page instead of skipping the rest; items may then be yielded twice.
        """
        params: dict[str, Any] = {**self.source.list_filters(), **filters}
        params["maxResults"] = self.page_size
        restarts = 0
        token: str | None = None
        while True:
            if stop is not None and stop.is_set():
                raise Interrupted("stopped between two pages")
            call = dict(params, nextToken=token) if token else params
            try:
                body = self._call("ListSigningJobs", **call)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if token and code == "ValidationException" and restarts < 3:
                    restarts += 1
                    log.warning("nextToken refused mid-listing; restarting the listing %s", filters)
                    token = None
                    continue
                raise
            jobs = body.get("jobs", [])
            if not isinstance(jobs, list):
                raise MalformedResponse("ListSigningJobs: 'jobs' is not a list")
            next_token = body.get("nextToken")
            more = isinstance(next_token, str) and bool(next_token)
            yield Page(jobs, more)
            if not more:
                return
            token = next_token

    def list_profiles(self) -> Iterator[Any]:
        """Every signing profile version, canceled ones included."""
        token: str | None = None
        while True:
            params: dict[str, Any] = {"includeCanceled": True, "maxResults": 25}
            if token:
                params["nextToken"] = token
            body = self._call("ListSigningProfiles", **params)
            profiles = body.get("profiles", [])
            if not isinstance(profiles, list):
                raise MalformedResponse("ListSigningProfiles: 'profiles' is not a list")
            yield from profiles
            next_token = body.get("nextToken")
            if not isinstance(next_token, str) or not next_token:
                return
            token = next_token

    def describe_job(self, job_id: str) -> dict[str, Any] | None:
        """DescribeSigningJob, or None when the API no longer knows the job."""
        try:
            return self._call("DescribeSigningJob", jobId=job_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise


def counter_delta(now: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    """What a counter (calls, errors) grew by since ``before``."""
    return {
        key: value - before.get(key, 0) for key, value in now.items() if value > before.get(key, 0)
    }


def _pause(attempt: int) -> None:
    time.sleep(min(10.0, 0.05 * 2**attempt) * random.random())  # noqa: S311 - jitter


def _snake(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")


def _session_for(source: SourceConfig) -> boto3.Session:
    """The standard credential chain, optionally through an assumed role."""
    try:
        base = boto3.Session(profile_name=source.aws_profile, region_name=source.region)
    except BotoCoreError as exc:
        raise ConfigError(f"source {source.name!r}: aws_profile: {exc}") from None
    if not source.role_arn:
        return base
    role_arn = source.role_arn
    external_id = source.external_id.get_secret_value() if source.external_id else None

    def refresh() -> dict[str, str]:
        sts = base.client("sts")
        params: dict[str, Any] = {
            "RoleArn": role_arn,
            "RoleSessionName": source.role_session_name,
        }
        if external_id:
            params["ExternalId"] = external_id
        try:
            creds = sts.assume_role(**params)["Credentials"]
        except NoCredentialsError:
            raise ConfigError(
                f"source {source.name!r}: no AWS credentials to assume {role_arn}"
            ) from None
        except (ClientError, BotoCoreError, ResponseParserError) as exc:
            # One line, and never the external id (botocore does not echo it; be sure).
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if external_id:
                reason = reason.replace(external_id, "***")
            raise AssumeRoleFailed(
                f"source {source.name!r}: cannot assume {role_arn}: {reason}"
            ) from None
        expiry: Any = creds["Expiration"]
        if isinstance(expiry, datetime):
            expiry = expiry.astimezone(UTC).isoformat()
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": expiry,
        }

    credentials = RefreshableCredentials.create_from_metadata(
        metadata=refresh(), refresh_using=refresh, method="sts-assume-role"
    )
    core = botocore.session.get_session()
    # botocore has no public setter for refreshable credentials; this is the usual way.
    core._credentials = credentials  # type: ignore[attr-defined]
    return boto3.Session(botocore_session=core, region_name=source.region or base.region_name)
