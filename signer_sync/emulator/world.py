"""In-memory model of one AWS account's Signer state, with its own clock.

Tests drive a :class:`World` directly (add jobs, revoke them, move the clock) while an
:class:`~signer_sync.emulator.server.EmulatorServer` serves the same object over HTTP.
Every public method takes the world lock, so both sides may run concurrently.

The world deliberately behaves in ways a client must not silently rely on: listings come
in a keyed-hash order (not by time, not by id, not by insertion), and the way MONTHS and
YEARS validity turns into an instant is configurable.
"""

from __future__ import annotations

import base64
import bisect
import calendar
import copy
import hashlib
import json
import random
import string
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "DEFAULT_PLATFORM_ID",
    "JOB_STATUSES",
    "MONTH_RULES",
    "PLATFORMS",
    "PROFILE_STATUSES",
    "RETENTION",
    "VALIDITY_TYPES",
    "Job",
    "JobFilter",
    "Profile",
    "World",
    "epoch_seconds",
    "signature_expiry",
]

#: How long a job stays visible. AWS says "two years"; 730 days is our (arbitrary) reading.
RETENTION = timedelta(days=730)
MONTH_RULES = ("average", "calendar", "thirty")
VALIDITY_TYPES = ("DAYS", "MONTHS", "YEARS")
JOB_STATUSES = ("InProgress", "Failed", "Succeeded")
PROFILE_STATUSES = ("Active", "Canceled", "Revoked")
DEFAULT_PLATFORM_ID = "AWSLambda-SHA384-ECDSA"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_ALNUM = string.ascii_letters + string.digits


def _platform(
    platform_id: str,
    display_name: str,
    partner: str,
    target: str,
    hash_algorithm: str,
    image_format: str,
    max_size_mb: int,
    revocation_supported: bool,
) -> dict[str, Any]:
    return {
        "platformId": platform_id,
        "displayName": display_name,
        "partner": partner,
        "target": target,
        "category": "AWSIoT",
        "signingConfiguration": {
            "encryptionAlgorithmOptions": {"allowedValues": ["ECDSA"], "defaultValue": "ECDSA"},
            "hashAlgorithmOptions": {
                "allowedValues": [hash_algorithm],
                "defaultValue": hash_algorithm,
            },
        },
        "signingImageFormat": {"supportedFormats": [image_format], "defaultFormat": image_format},
        "maxSizeInMB": max_size_mb,
        "revocationSupported": revocation_supported,
    }


#: Wire records of the signing platforms the emulator knows, keyed by platformId.
PLATFORMS: dict[str, dict[str, Any]] = {
    p["platformId"]: p
    for p in (
        _platform(
            "AWSLambda-SHA384-ECDSA",
            "AWS Lambda",
            "AWSLambda",
            "SHA384-ECDSA",
            "SHA384",
            "JSONDetached",
            250,
            True,
        ),
        _platform(
            "AWSIoTDeviceManagement-SHA256-ECDSA",
            "AWS IoT Device Management SHA256-ECDSA",
            "AWSIoTDeviceManagement",
            "SHA256-ECDSA",
            "SHA256",
            "JSONDetached",
            2048,
            False,
        ),
        _platform(
            "Notation-OCI-SHA384-ECDSA",
            "Notation for Notary v2 OCI signatures",
            "Notation",
            "SHA384-ECDSA",
            "SHA384",
            "JSONEmbedded",
            0,
            True,
        ),
    )
}


def _utc_ms(dt: datetime) -> datetime:
    """Normalise to UTC and truncate to milliseconds, the precision the wire carries.

    Keeping the model at wire precision means a client comparing what it received with
    ``World`` state never disagrees by a few microseconds.
    """
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt!r}: the world only accepts tz-aware instants")
    dt = dt.astimezone(UTC)
    return dt.replace(microsecond=dt.microsecond - dt.microsecond % 1000)


def epoch_seconds(dt: datetime) -> float:
    """Epoch seconds with millisecond precision, exactly as the JSON body carries them."""
    return ((dt - _EPOCH) // _MS) / 1000


def _add_months(dt: datetime, months: int) -> datetime:
    years, month0 = divmod(dt.month - 1 + months, 12)
    year, month = dt.year + years, month0 + 1
    day = min(dt.day, calendar.monthrange(year, month)[1])
    return dt.replace(year=year, month=month, day=day)


def signature_expiry(
    start: datetime, value: int, validity_type: str, month_rule: str = "average"
) -> datetime:
    """When a signature made at ``start`` expires under a profile's validity period.

    AWS does not document how MONTHS/YEARS become an instant, so the rule is a knob:
    ``average`` (30.436875-day months, 365.2425-day years), ``calendar`` (calendar
    arithmetic, clamping the day to the month end) or ``thirty`` (30-day months,
    360-day years). DAYS are always exact 24-hour days.
    """
    if month_rule not in MONTH_RULES:
        raise ValueError(f"month_rule must be one of {MONTH_RULES}, not {month_rule!r}")
    if validity_type == "DAYS":
        end = start + timedelta(days=value)
    elif validity_type == "MONTHS":
        if month_rule == "average":
            end = start + timedelta(days=value * 30.436875)
        elif month_rule == "calendar":
            end = _add_months(start, value)
        else:
            end = start + timedelta(days=30 * value)
    elif validity_type == "YEARS":
        if month_rule == "average":
            end = start + timedelta(days=value * 365.2425)
        elif month_rule == "calendar":
            end = _add_months(start, 12 * value)
        else:
            end = start + timedelta(days=360 * value)
    else:
        raise ValueError(f"validity_type must be one of {VALIDITY_TYPES}, not {validity_type!r}")
    return _utc_ms(end)


@dataclass
class Profile:
    """One version of a signing profile."""

    name: str
    version: str
    version_arn: str
    arn: str
    platform_id: str
    platform_display_name: str
    validity_value: int
    validity_type: str
    certificate_arn: str
    status: str = "Active"
    tags: dict[str, str] = field(default_factory=dict)
    signing_parameters: dict[str, str] = field(default_factory=dict)


@dataclass
class Job:
    """One signing job; timestamps are tz-aware UTC with millisecond precision."""

    job_id: str
    profile_name: str
    profile_version: str
    platform_id: str
    platform_display_name: str
    status: str
    created_at: datetime
    completed_at: datetime | None
    signature_expires_at: datetime | None
    is_revoked: bool
    revoked_at: datetime | None
    revoked_by: str | None
    revocation_reason: str | None
    status_reason: str | None
    requested_by: str
    job_owner: str
    job_invoker: str
    source_bucket: str
    source_key: str
    source_version: str
    signed_bucket: str | None
    signed_key: str | None
    certificate_arn: str


@dataclass(frozen=True)
class JobFilter:
    """The ListSigningJobs filters, already parsed.

    ``expires_after`` is inclusive (``>=``) and ``expires_before`` exclusive (``<``).
    AWS documents neither edge; this is an arbitrary choice so clients that depend on the
    edges get caught by tests. Jobs without ``signatureExpiresAt`` match neither filter.
    """

    status: str | None = None
    platform_id: str | None = None
    requested_by: str | None = None
    is_revoked: bool | None = None
    expires_before: datetime | None = None
    expires_after: datetime | None = None
    job_invoker: str | None = None

    def is_empty(self) -> bool:
        return self == JobFilter()

    def matches(self, job: Job) -> bool:
        if self.status is not None and job.status != self.status:
            return False
        if self.platform_id is not None and job.platform_id != self.platform_id:
            return False
        if self.requested_by is not None and job.requested_by != self.requested_by:
            return False
        if self.is_revoked is not None and job.is_revoked != self.is_revoked:
            return False
        if self.job_invoker is not None and job.job_invoker != self.job_invoker:
            return False
        if self.expires_before is not None or self.expires_after is not None:
            expires = job.signature_expires_at
            if expires is None:
                return False
            if self.expires_after is not None and expires < self.expires_after:
                return False
            if self.expires_before is not None and expires >= self.expires_before:
                return False
        return True

    def fingerprint(self) -> str:
        """A stable digest of the filter set, so a nextToken can be bound to it."""
        canon = {
            "status": self.status,
            "platformId": self.platform_id,
            "requestedBy": self.requested_by,
            "isRevoked": self.is_revoked,
            "before": self.expires_before.isoformat() if self.expires_before else None,
            "after": self.expires_after.isoformat() if self.expires_after else None,
            "jobInvoker": self.job_invoker,
        }
        return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()[:24]


_RawItem = dict[str, Any]
_Entry = Job | _RawItem

_FAILURE_REASONS = (
    "Access denied to source object",
    "Source object not found",
    "Source object version does not exist",
    "Unsupported file format",
)
_REVOCATION_REASONS = ("Key compromise", "Superseded", "Released by mistake")


class World:
    """The state of one Signer account: profiles, jobs, and a clock.

    The clock starts at ``now`` (default: real time) and then advances with wall time
    unless frozen; ``advance`` jumps it. Randomness (job ids, profile versions, seeded
    data) comes from ``random.Random(seed)``, so a seed plus a call sequence is
    reproducible. The listing order is a keyed sha256 of each job id under a secret
    derived from the seed.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        now: datetime | None = None,
        month_rule: str = "average",
        frozen: bool = False,
    ) -> None:
        if month_rule not in MONTH_RULES:
            raise ValueError(f"month_rule must be one of {MONTH_RULES}, not {month_rule!r}")
        self.seed = seed
        self.region = region
        self.account_id = account_id
        self.month_rule = month_rule
        self._lock = threading.RLock()
        self._rng = random.Random(seed)  # noqa: S311 - reproducible test data, not crypto
        self._secret = hashlib.sha256(f"signer-emulator/{seed}".encode()).digest()
        self._base = _utc_ms(now) if now is not None else _utc_ms(datetime.now(UTC))
        self._mono = time.monotonic()
        self._frozen = frozen
        self._profiles: dict[str, list[Profile]] = {}
        self._jobs: dict[str, Job] = {}
        self._job_keys: dict[str, bytes] = {}
        self._raw_ids: dict[str, bytes] = {}
        self._raw_count = 0
        self._keys: list[bytes] = []
        self._entries: dict[bytes, _Entry] = {}

    # ------------------------------------------------------------------ clock

    @property
    def now(self) -> datetime:
        """The world clock (tz-aware UTC)."""
        with self._lock:
            if self._frozen:
                return self._base
            return self._base + timedelta(seconds=time.monotonic() - self._mono)

    @property
    def frozen(self) -> bool:
        return self._frozen

    def advance(self, delta: timedelta) -> None:
        """Jump the clock forward (jobs may age out as a result)."""
        if delta < timedelta(0):
            raise ValueError("the world clock only moves forward")
        with self._lock:
            self._base += delta

    def freeze(self) -> None:
        """Stop the clock following wall time (for deterministic tests)."""
        with self._lock:
            self._base = self.now
            self._frozen = True

    def unfreeze(self) -> None:
        """Let the clock follow wall time again, from where it stands."""
        with self._lock:
            if self._frozen:
                self._mono = time.monotonic()
                self._frozen = False

    # --------------------------------------------------------------- profiles

    def add_profile(
        self,
        name: str,
        validity_value: int,
        validity_type: str,
        *,
        platform_id: str = DEFAULT_PLATFORM_ID,
        status: str = "Active",
        tags: dict[str, str] | None = None,
        signing_parameters: dict[str, str] | None = None,
    ) -> Profile:
        """Create a profile, or a new version of it when the name already exists."""
        if validity_type not in VALIDITY_TYPES:
            raise ValueError(f"validity_type must be one of {VALIDITY_TYPES}")
        if status not in PROFILE_STATUSES:
            raise ValueError(f"status must be one of {PROFILE_STATUSES}")
        if platform_id not in PLATFORMS:
            raise ValueError(f"unknown platform {platform_id!r}; known: {sorted(PLATFORMS)}")
        if validity_value < 1:
            raise ValueError("validity_value must be positive")
        with self._lock:
            version = "".join(self._rng.choice(_ALNUM) for _ in range(10))
            arn = f"arn:aws:signer:{self.region}:{self.account_id}:/signing-profiles/{name}"
            cert = f"arn:aws:acm:{self.region}:{self.account_id}:certificate/{self._uuid()}"
            profile = Profile(
                name=name,
                version=version,
                version_arn=f"{arn}/{version}",
                arn=arn,
                platform_id=platform_id,
                platform_display_name=PLATFORMS[platform_id]["displayName"],
                validity_value=validity_value,
                validity_type=validity_type,
                certificate_arn=cert,
                status=status,
                tags=dict(tags or {}),
                signing_parameters=dict(signing_parameters or {}),
            )
            self._profiles.setdefault(name, []).append(profile)
            return copy.deepcopy(profile)

    def cancel_profile(self, name: str) -> None:
        """Cancel every version of a profile; its existing jobs stay listed."""
        with self._lock:
            for profile in self._versions(name):
                profile.status = "Canceled"

    def profiles(self) -> list[Profile]:
        """Every version of every profile (copies), oldest version first per name."""
        with self._lock:
            return [copy.deepcopy(p) for versions in self._profiles.values() for p in versions]

    def _versions(self, name: str) -> list[Profile]:
        try:
            return self._profiles[name]
        except KeyError:
            raise KeyError(f"no signing profile named {name!r}") from None

    def _profile_version(self, name: str, version: str) -> Profile:
        for profile in self._versions(name):
            if profile.version == version:
                return profile
        raise KeyError(f"profile {name!r} has no version {version!r}")

    # ------------------------------------------------------------------- jobs

    def add_job(
        self,
        profile_name: str,
        *,
        status: str = "Succeeded",
        created_at: datetime | None = None,
        signing_seconds: float | None = None,
        requested_by: str | None = None,
        job_invoker: str | None = None,
        source_key: str | None = None,
        profile_version: str | None = None,
    ) -> Job:
        """Start a job on the latest (or given) profile version, in the given final status.

        Succeeded: ``completed_at = created_at + signing_seconds`` (random 1-30 s) and the
        expiry follows from the profile validity under ``month_rule``. Failed: completed,
        with a reason, no expiry. InProgress: neither. Without ``created_at`` a finished
        job is backdated by ``signing_seconds`` so that it completes exactly "now".
        """
        if status not in JOB_STATUSES:
            raise ValueError(f"status must be one of {JOB_STATUSES}")
        with self._lock:
            versions = self._versions(profile_name)
            profile = (
                versions[-1]
                if profile_version is None
                else self._profile_version(profile_name, profile_version)
            )
            if profile.status != "Active":
                raise ValueError(f"profile {profile_name!r} is {profile.status}; cannot sign")
            seconds = self._rng.uniform(1, 30) if signing_seconds is None else signing_seconds
            if created_at is None:
                now = self.now
                created_at = now if status == "InProgress" else now - timedelta(seconds=seconds)
            job = self._make_job(
                profile,
                status=status,
                created_at=created_at,
                signing_seconds=seconds,
                requested_by=requested_by,
                job_invoker=job_invoker,
                source_key=source_key,
            )
            self._insert([job])
            return copy.copy(job)

    def complete_job(self, job_id: str, *, at: datetime | None = None) -> Job:
        """InProgress -> Succeeded; the expiry counts from the completion instant."""
        with self._lock:
            job = self._live_job(job_id)
            if job.status != "InProgress":
                raise ValueError(f"job {job_id} is {job.status}, not InProgress")
            profile = self._profile_version(job.profile_name, job.profile_version)
            self._succeed(job, profile, _utc_ms(at) if at is not None else _utc_ms(self.now))
            return copy.copy(job)

    def fail_job(
        self,
        job_id: str,
        reason: str = "Access denied to source object",
        *,
        at: datetime | None = None,
    ) -> Job:
        """InProgress -> Failed."""
        with self._lock:
            job = self._live_job(job_id)
            if job.status != "InProgress":
                raise ValueError(f"job {job_id} is {job.status}, not InProgress")
            job.status = "Failed"
            job.completed_at = _utc_ms(at) if at is not None else _utc_ms(self.now)
            job.status_reason = reason
            return copy.copy(job)

    def revoke_job(
        self,
        job_id: str,
        reason: str = "Key compromise",
        revoked_by: str | None = None,
        *,
        at: datetime | None = None,
    ) -> Job:
        """Mark a job's signature revoked (any status is accepted; AWS is not specific)."""
        with self._lock:
            job = self._live_job(job_id)
            job.is_revoked = True
            job.revoked_at = _utc_ms(at) if at is not None else _utc_ms(self.now)
            job.revoked_by = revoked_by or f"arn:aws:iam::{self.account_id}:user/security-admin"
            job.revocation_reason = reason
            return copy.copy(job)

    def forget(self, job_id: str) -> None:
        """Make a job (or a raw item with that jobId) vanish from the API, as if aged out."""
        with self._lock:
            if job_id in self._job_keys:
                key = self._job_keys.pop(job_id)
                del self._jobs[job_id]
            elif job_id in self._raw_ids:
                key = self._raw_ids.pop(job_id)
            else:
                raise KeyError(f"no job {job_id!r}")
            del self._entries[key]
            index = bisect.bisect_left(self._keys, key)
            del self._keys[index]

    def get_job(self, job_id: str) -> Job:
        """A copy of a job, whether or not the API still shows it."""
        with self._lock:
            return copy.copy(self._live_job(job_id))

    def add_raw_item(self, item: dict[str, Any]) -> None:
        """Inject an arbitrary record, returned verbatim by *unfiltered* ListSigningJobs.

        Filtered listings never return raw items, since the emulator cannot know how an
        odd record should match a filter. When ``item["jobId"]`` is a string the record
        is also what DescribeSigningJob returns for that id, and ``forget`` removes it.
        Raw items never age out.
        """
        with self._lock:
            self._raw_count += 1
            key = self._order_key(f"raw-item/{self._raw_count}")
            stored = copy.deepcopy(item)
            job_id = stored.get("jobId")
            if isinstance(job_id, str):
                if job_id in self._jobs or job_id in self._raw_ids:
                    raise ValueError(f"jobId {job_id!r} already exists")
                self._raw_ids[job_id] = key
            self._entries[key] = stored
            bisect.insort(self._keys, key)

    def __len__(self) -> int:
        """Jobs and raw items held, including aged-out ones."""
        with self._lock:
            return len(self._keys)

    # ---------------------------------------------------------------- seeding

    def seed_organisation(self, jobs: int, *, years: float = 2.0) -> None:
        """Populate a plausible organisation, deterministically from the seed.

        Six profiles (validity 7 DAYS, 30 DAYS, 6 then 1 YEARS in two versions, 3 YEARS,
        135 MONTHS, plus a canceled one), three platforms, a handful of requesters
        including two other invoking accounts. About 97% Succeeded, 3% Failed, 0.3%
        InProgress (all from the last 15 minutes: signing takes seconds, so at any moment
        few jobs are in flight), 2% of Succeeded revoked. Creation times spread evenly
        over the last ``years`` 365-day years, so with ``years > 2`` some jobs are already
        beyond the retention limit. Calling it again only adds jobs.
        """
        with self._lock:
            now = self.now
            span = timedelta(days=365 * years)
            switch_at = now - span / 3  # containers v2 replaces v1
            cancel_at = now - span / 2  # legacy_lambda stops being used
            self._seed_profiles()
            weighted: list[tuple[str, float]] = [
                ("lambda_prod", 30),
                ("lambda_dev", 20),
                ("firmware_release", 12),
                ("containers", 20),
                ("nightly_builds", 10),
                ("legacy_lambda", 8),
            ]
            names = [n for n, _ in weighted]
            cum = list(_cumulative(w for _, w in weighted))
            rng = self._rng
            batch: list[Job] = []
            for _ in range(jobs):
                roll = rng.random()
                if roll < 0.003:
                    status = "InProgress"
                    created = now - timedelta(seconds=rng.uniform(0, 900))
                else:
                    status = "Failed" if roll < 0.03 else "Succeeded"
                    created = now - span * rng.random()
                name = rng.choices(names, cum_weights=cum)[0]
                if name == "legacy_lambda" and created >= cancel_at:
                    name = "lambda_prod"
                versions = self._profiles[name]
                profile = versions[0] if len(versions) > 1 and created < switch_at else versions[-1]
                job = self._make_job(
                    profile,
                    status=status,
                    created_at=created,
                    signing_seconds=rng.uniform(1, 30),
                    clamp_to=now,
                )
                if status == "Succeeded" and rng.random() < 0.02:
                    assert job.completed_at is not None
                    job.is_revoked = True
                    job.revoked_at = _utc_ms(
                        job.completed_at + (now - job.completed_at) * rng.random()
                    )
                    job.revoked_by = f"arn:aws:iam::{self.account_id}:user/security-admin"
                    job.revocation_reason = rng.choice(_REVOCATION_REASONS)
                batch.append(job)
            self._insert(batch)
            self.cancel_profile("legacy_lambda")

    def _seed_profiles(self) -> None:
        specs: list[tuple[str, int, str, str, dict[str, str]]] = [
            ("lambda_prod", 135, "MONTHS", "AWSLambda-SHA384-ECDSA", {}),
            ("lambda_dev", 30, "DAYS", "AWSLambda-SHA384-ECDSA", {}),
            (
                "firmware_release",
                3,
                "YEARS",
                "AWSIoTDeviceManagement-SHA256-ECDSA",
                {"certname": "firmware-signing.pem"},
            ),
            ("containers", 6, "MONTHS", "Notation-OCI-SHA384-ECDSA", {}),
            ("nightly_builds", 7, "DAYS", "Notation-OCI-SHA384-ECDSA", {}),
            ("legacy_lambda", 1, "YEARS", "AWSLambda-SHA384-ECDSA", {}),
        ]
        for name, value, vtype, platform_id, params in specs:
            if name in self._profiles:
                continue
            team = "platform" if platform_id != "AWSLambda-SHA384-ECDSA" else "serverless"
            self.add_profile(
                name,
                value,
                vtype,
                platform_id=platform_id,
                tags={"team": team},
                signing_parameters=params,
            )
            if name == "containers":
                self.add_profile(
                    name,
                    1,
                    "YEARS",
                    platform_id=platform_id,
                    tags={"team": team},
                    signing_parameters=params,
                )

    def add_random_jobs(self, n: int, *, since: datetime | None = None) -> list[Job]:
        """Add ``n`` jobs on random active profiles, created between ``since`` and now.

        ``since`` defaults to one hour ago. Status mix as in ``seed_organisation``;
        completion is clamped to the current clock so nothing finishes in the future.
        """
        with self._lock:
            now = self.now
            start = _utc_ms(since) if since is not None else now - timedelta(hours=1)
            active = [v[-1] for v in self._profiles.values() if v[-1].status == "Active"]
            if not active:
                raise ValueError("no active profile; call add_profile or seed_organisation")
            rng = self._rng
            made: list[Job] = []
            for _ in range(n):
                roll = rng.random()
                status = "InProgress" if roll < 0.03 else "Failed" if roll < 0.06 else "Succeeded"
                created = start + (now - start) * rng.random()
                made.append(
                    self._make_job(
                        rng.choice(active),
                        status=status,
                        created_at=created,
                        signing_seconds=rng.uniform(1, 30),
                        clamp_to=now,
                    )
                )
            self._insert(made)
            return [copy.copy(j) for j in made]

    # --------------------------------------------------------------- internals

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _order_key(self, ident: str) -> bytes:
        return hashlib.sha256(self._secret + ident.encode()).digest()[:16]

    def _requester(self) -> tuple[str, str]:
        rng = self._rng
        roll = rng.random()
        own = self.account_id
        if roll < 0.35:
            return f"arn:aws:iam::{own}:role/ci-release", own
        if roll < 0.55:
            return f"arn:aws:sts::{own}:assumed-role/GitHubActions/gha-{rng.randrange(10**6)}", own
        if roll < 0.70:
            return f"arn:aws:iam::{own}:user/alice", own
        if roll < 0.80:
            return f"arn:aws:iam::{own}:user/bob", own
        if roll < 0.92:
            return "arn:aws:iam::210987654321:role/partner-signer", "210987654321"
        return "arn:aws:iam::345678901234:user/carol", "345678901234"

    def _make_job(
        self,
        profile: Profile,
        *,
        status: str,
        created_at: datetime,
        signing_seconds: float,
        requested_by: str | None = None,
        job_invoker: str | None = None,
        source_key: str | None = None,
        clamp_to: datetime | None = None,
    ) -> Job:
        rng = self._rng
        job_id = self._uuid()
        default_requester, default_invoker = self._requester()
        if requested_by is None:
            requested_by = default_requester
        if job_invoker is None:
            job_invoker = default_invoker
        created = _utc_ms(created_at)
        if source_key is None:
            if profile.platform_id.startswith("AWSIoT"):
                device, build = rng.randrange(1000), rng.randrange(10**5)
                source_key = f"firmware/device-{device:03d}/image-{build}.bin"
            elif profile.platform_id.startswith("Notation"):
                source_key = f"payloads/sha256-{rng.getrandbits(64):016x}.json"
            else:
                function, build = rng.randrange(200), rng.randrange(10**5)
                source_key = f"functions/fn-{function:03d}/build-{build}.zip"
        job = Job(
            job_id=job_id,
            profile_name=profile.name,
            profile_version=profile.version,
            platform_id=profile.platform_id,
            platform_display_name=profile.platform_display_name,
            status="InProgress",
            created_at=created,
            completed_at=None,
            signature_expires_at=None,
            is_revoked=False,
            revoked_at=None,
            revoked_by=None,
            revocation_reason=None,
            status_reason=None,
            requested_by=requested_by,
            job_owner=self.account_id,
            job_invoker=job_invoker,
            source_bucket=f"signing-source-{self.account_id}-{self.region}",
            source_key=source_key,
            source_version=_s3_version_id(rng),
            signed_bucket=None,
            signed_key=None,
            certificate_arn=profile.certificate_arn,
        )
        if status != "InProgress":
            done = created + timedelta(seconds=signing_seconds)
            if clamp_to is not None and done > clamp_to:
                done = max(created, clamp_to)
            if status == "Succeeded":
                self._succeed(job, profile, _utc_ms(done))
            else:
                job.status = "Failed"
                job.completed_at = _utc_ms(done)
                job.status_reason = rng.choice(_FAILURE_REASONS)
        return job

    def _succeed(self, job: Job, profile: Profile, done: datetime) -> None:
        job.status = "Succeeded"
        job.completed_at = done
        job.status_reason = "Signing Succeeded"
        job.signature_expires_at = signature_expiry(
            done, profile.validity_value, profile.validity_type, self.month_rule
        )
        job.signed_bucket = f"signing-destination-{self.account_id}-{self.region}"
        job.signed_key = f"signed/{job.job_id}"

    def _insert(self, jobs: Sequence[Job]) -> None:
        """Index new jobs; a big batch is appended then sorted once (timsort likes that)."""
        pairs = [(self._order_key(j.job_id), j) for j in jobs]
        for key, job in pairs:
            if job.job_id in self._jobs or job.job_id in self._raw_ids:
                raise ValueError(f"duplicate job id {job.job_id}")
            self._jobs[job.job_id] = job
            self._job_keys[job.job_id] = key
            self._entries[key] = job
        if len(pairs) > 64:
            self._keys.extend(k for k, _ in pairs)
            self._keys.sort()
        else:
            for key, _ in pairs:
                bisect.insort(self._keys, key)

    def _live_job(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise KeyError(f"no job {job_id!r}") from None

    def _cutoff(self) -> datetime:
        return self.now - RETENTION

    # ------------------------------------------------------------ API queries

    @property
    def token_key(self) -> bytes:
        """Key the API layer uses to sign pagination tokens (per world, from the seed)."""
        return hashlib.sha256(b"next-token/" + self._secret).digest()

    def listed_jobs(self) -> list[Job]:
        """Copies of the jobs a complete ListSigningJobs returns now, in listing order."""
        with self._lock:
            cutoff = self._cutoff()
            out: list[Job] = []
            for key in self._keys:
                entry = self._entries[key]
                if isinstance(entry, Job) and entry.created_at >= cutoff:
                    out.append(copy.copy(entry))
            return out

    def all_jobs(self) -> list[Job]:
        """Copies of every job still held, aged-out ones included, in listing order."""
        with self._lock:
            return [copy.copy(e) for k in self._keys if isinstance(e := self._entries[k], Job)]

    def listed_items(self) -> list[dict[str, Any]]:
        """Wire items of a complete unfiltered listing now, raw items included, in order."""
        with self._lock:
            items, _ = self.page_jobs(JobFilter(), None, len(self._keys) + 1)
            return items

    def page_jobs(
        self, flt: JobFilter, after: bytes | None, limit: int
    ) -> tuple[list[dict[str, Any]], bytes | None]:
        """One keyset page: matching items after ``after`` in hash order, and the cursor.

        The cursor is the last returned key, or ``None`` when nothing matches beyond it.
        Because positions are fixed hashes, jobs added or changed between pages never
        push a still-matching job past the cursor.
        """
        with self._lock:
            cutoff = self._cutoff()
            include_raw = flt.is_empty()
            keys = self._keys
            index = 0 if after is None else bisect.bisect_right(keys, after)
            out: list[dict[str, Any]] = []
            last: bytes | None = None
            for i in range(index, len(keys)):
                key = keys[i]
                entry = self._entries[key]
                if isinstance(entry, Job):
                    if entry.created_at < cutoff or not flt.matches(entry):
                        continue
                elif not include_raw:
                    continue
                if len(out) >= limit:
                    return out, last
                out.append(
                    self.list_item(entry) if isinstance(entry, Job) else copy.deepcopy(entry)
                )
                last = key
            return out, None

    def describe(self, job_id: str) -> dict[str, Any] | None:
        """The DescribeSigningJob body, or None when the API would answer 404."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                return self.describe_item(job) if job.created_at >= self._cutoff() else None
            key = self._raw_ids.get(job_id)
            if key is None:
                return None
            raw = self._entries[key]
            return copy.deepcopy(raw) if isinstance(raw, dict) else None

    def list_item(self, job: Job) -> dict[str, Any]:
        """The ListSigningJobs item for a job, exactly as the wire carries it."""
        item: dict[str, Any] = {
            "jobId": job.job_id,
            "source": {
                "s3": {
                    "bucketName": job.source_bucket,
                    "key": job.source_key,
                    "version": job.source_version,
                }
            },
            "signingMaterial": {"certificateArn": job.certificate_arn},
            "createdAt": epoch_seconds(job.created_at),
            "status": job.status,
            "isRevoked": job.is_revoked,
            "profileName": job.profile_name,
            "profileVersion": job.profile_version,
            "platformId": job.platform_id,
            "platformDisplayName": job.platform_display_name,
            "jobOwner": job.job_owner,
            "jobInvoker": job.job_invoker,
        }
        if job.status == "Succeeded":
            if job.signed_bucket is not None and job.signed_key is not None:
                item["signedObject"] = {
                    "s3": {"bucketName": job.signed_bucket, "key": job.signed_key}
                }
            if job.signature_expires_at is not None:
                item["signatureExpiresAt"] = epoch_seconds(job.signature_expires_at)
        return item

    def describe_item(self, job: Job) -> dict[str, Any]:
        """The DescribeSigningJob body for a job, exactly as the wire carries it: the
        listing's fields but ``isRevoked``, plus the details only a describe gives."""
        item = self.list_item(job)
        del item["isRevoked"]
        item["requestedBy"] = job.requested_by
        if job.completed_at is not None and job.status != "InProgress":
            item["completedAt"] = epoch_seconds(job.completed_at)
        if job.status_reason is not None:
            item["statusReason"] = job.status_reason
        if job.is_revoked:
            record: dict[str, Any] = {}
            if job.revocation_reason is not None:
                record["reason"] = job.revocation_reason
            if job.revoked_at is not None:
                record["revokedAt"] = epoch_seconds(job.revoked_at)
            if job.revoked_by is not None:
                record["revokedBy"] = job.revoked_by
            item["revocationRecord"] = record
        return item

    def profile_item(self, profile: Profile) -> dict[str, Any]:
        """The ListSigningProfiles item for one profile version."""
        item: dict[str, Any] = {
            "profileName": profile.name,
            "profileVersion": profile.version,
            "profileVersionArn": profile.version_arn,
            "signingMaterial": {"certificateArn": profile.certificate_arn},
            "signatureValidityPeriod": {
                "value": profile.validity_value,
                "type": profile.validity_type,
            },
            "platformId": profile.platform_id,
            "platformDisplayName": profile.platform_display_name,
            "status": profile.status,
            "arn": profile.arn,
        }
        if profile.signing_parameters:
            item["signingParameters"] = dict(profile.signing_parameters)
        if profile.tags:
            item["tags"] = dict(profile.tags)
        return item

    def page_profiles(
        self,
        *,
        include_canceled: bool,
        platform_id: str | None,
        statuses: Sequence[str] | None,
        after: bytes | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], bytes | None]:
        """Latest version of each profile, hash-ordered and keyset-paged like jobs.

        Canceled profiles appear only with ``include_canceled`` (even when ``statuses``
        asks for Canceled); ``statuses`` further narrows the result.
        """
        with self._lock:
            entries: list[tuple[bytes, dict[str, Any]]] = []
            for name, versions in self._profiles.items():
                profile = versions[-1]
                if profile.status == "Canceled" and not include_canceled:
                    continue
                if platform_id is not None and profile.platform_id != platform_id:
                    continue
                if statuses and profile.status not in statuses:
                    continue
                entries.append((self._order_key(f"profile/{name}"), self.profile_item(profile)))
            return _page_small(entries, after, limit)

    def page_platforms(
        self,
        *,
        category: str | None,
        partner: str | None,
        target: str | None,
        after: bytes | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], bytes | None]:
        """The known platforms, filtered by exact match and keyset-paged."""
        entries = [
            (self._order_key(f"platform/{pid}"), copy.deepcopy(p))
            for pid, p in PLATFORMS.items()
            if (category is None or p["category"] == category)
            and (partner is None or p["partner"] == partner)
            and (target is None or p["target"] == target)
        ]
        return _page_small(entries, after, limit)


def _s3_version_id(rng: random.Random) -> str:
    """A 32-character S3-style version id (one getrandbits call: seeding 200k jobs is hot)."""
    return base64.urlsafe_b64encode(rng.getrandbits(192).to_bytes(24, "big")).decode()


def _cumulative(weights: Iterable[float]) -> Iterable[float]:
    total = 0.0
    for w in weights:
        total += w
        yield total


def _page_small(
    entries: list[tuple[bytes, dict[str, Any]]], after: bytes | None, limit: int
) -> tuple[list[dict[str, Any]], bytes | None]:
    entries.sort(key=_first)
    start = 0 if after is None else bisect.bisect_right([k for k, _ in entries], after)
    chunk = entries[start : start + limit]
    more = start + limit < len(entries)
    return [item for _, item in chunk], (chunk[-1][0] if more and chunk else None)


def _first(pair: tuple[bytes, dict[str, Any]]) -> bytes:
    return pair[0]
