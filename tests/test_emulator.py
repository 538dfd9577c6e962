"""The Signer emulator, exercised the way the product uses it: real boto3 over HTTP.

Each check compares the API with a brute-force reading of ``World`` state, so the
emulator's own filtering and paging code is never its own oracle.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlencode, urlsplit

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config
from botocore.retries import standard

from signer_sync.emulator import (
    RETENTION,
    EmulatorServer,
    Faults,
    Job,
    World,
    epoch_seconds,
    signature_expiry,
)
from signer_sync.emulator.__main__ import main as emulator_main

if TYPE_CHECKING:
    from types_boto3_signer import SignerClient

NOW = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)
SESSION = boto3.session.Session()
OTHER_ACCOUNT = "210987654321"


def make_client(url: str, *, attempts: int = 1, **config: Any) -> SignerClient:
    """A stock boto3 client; one attempt by default so injected faults surface."""
    cfg = Config(retries={"mode": "standard", "total_max_attempts": attempts}, **config)
    return cast(
        "SignerClient",
        SESSION.client(
            "signer",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
            config=cfg,
        ),
    )


def raw_get(url: str, path: str, query: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    """One request without botocore, to see exactly what is on the wire."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        conn.request("GET", path + ("?" + urlencode(query) if query else ""))
        resp = conn.getresponse()
        return resp.status, resp.headers, json.loads(resp.read())
    finally:
        conn.close()


def error_code(exc: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def collect(client: SignerClient, page_size: int | None = None, **filters: Any) -> list[str]:
    """Walk every page by hand, checking page sizes and the last-page contract."""
    ids: list[str] = []
    token: str | None = None
    expected = page_size or 7
    while True:
        kwargs: dict[str, Any] = dict(filters)
        if page_size is not None:
            kwargs["maxResults"] = page_size
        if token is not None:
            kwargs["nextToken"] = token
        resp = client.list_signing_jobs(**kwargs)
        ids.extend(j["jobId"] for j in resp["jobs"])
        token = resp.get("nextToken")
        if token is None:
            assert len(resp["jobs"]) <= expected
            return ids
        assert len(resp["jobs"]) == expected


def brute(
    jobs: list[Job],
    *,
    status: str | None = None,
    platformId: str | None = None,
    requestedBy: str | None = None,
    isRevoked: bool | None = None,
    jobInvoker: str | None = None,
    signatureExpiresAfter: datetime | None = None,
    signatureExpiresBefore: datetime | None = None,
) -> set[str]:
    """The reference filter: After is inclusive, Before exclusive, no expiry never matches."""
    out = set()
    for j in jobs:
        if status is not None and j.status != status:
            continue
        if platformId is not None and j.platform_id != platformId:
            continue
        if requestedBy is not None and j.requested_by != requestedBy:
            continue
        if isRevoked is not None and j.is_revoked != isRevoked:
            continue
        if jobInvoker is not None and j.job_invoker != jobInvoker:
            continue
        if signatureExpiresAfter is not None or signatureExpiresBefore is not None:
            exp = j.signature_expires_at
            if exp is None:
                continue
            if signatureExpiresAfter is not None and not exp >= signatureExpiresAfter:
                continue
            if signatureExpiresBefore is not None and not exp < signatureExpiresBefore:
                continue
        out.add(j.job_id)
    return out


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def world() -> World:
    """A read-only organisation, some of it already beyond the two-year retention."""
    w = World(seed=11, now=NOW, frozen=True)
    w.seed_organisation(200, years=2.5)
    succeeded = [j for j in w.listed_jobs() if j.status == "Succeeded" and not j.is_revoked]
    for job in succeeded[:3]:
        w.revoke_job(job.job_id, "Superseded", at=NOW - timedelta(days=1))
    for _ in range(3):  # a few in flight, whatever the seeded mix
        w.add_job("lambda_prod", status="InProgress", created_at=NOW - timedelta(minutes=5))
    return w


@pytest.fixture(scope="module")
def server(world: World) -> Iterator[EmulatorServer]:
    with EmulatorServer(world) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: EmulatorServer) -> SignerClient:
    return make_client(server.url)


@pytest.fixture
def fresh() -> Iterator[tuple[World, EmulatorServer, SignerClient]]:
    """A small world of its own, for tests that mutate state or inject faults."""
    w = World(seed=5, now=NOW, frozen=True)
    w.seed_organisation(60, years=1)
    with EmulatorServer(w) as srv:
        yield w, srv, make_client(srv.url, read_timeout=2, connect_timeout=2)


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, ctx: 0.0)


# ---------------------------------------------------------------------------- listing


def test_every_page_size_returns_every_listed_job_exactly_once(
    world: World, client: SignerClient
) -> None:
    expected = [j.job_id for j in world.listed_jobs()]
    assert 100 < len(expected) < 200  # years=2.5: some jobs aged out
    for size in [None, *range(1, 26)]:
        ids = collect(client, size)
        assert len(ids) == len(set(ids)), size
        assert ids == expected, size  # also: the listing order is stable


def test_listing_order_is_neither_time_nor_id(world: World, client: SignerClient) -> None:
    resp = client.list_signing_jobs(maxResults=25)
    created = [j["createdAt"] for j in resp["jobs"]]
    ids = [j["jobId"] for j in resp["jobs"]]
    assert created not in (sorted(created), sorted(created, reverse=True))
    assert ids not in (sorted(ids), sorted(ids, reverse=True))
    assert len(resp["jobs"]) == 25 and "nextToken" in resp


def test_default_page_size_is_seven(client: SignerClient) -> None:
    assert len(client.list_signing_jobs()["jobs"]) == 7


def test_wire_items_carry_epoch_millisecond_numbers(world: World, server: EmulatorServer) -> None:
    status, _, body = raw_get(server.url, "/signing-jobs", {"maxResults": "25"})
    assert status == 200
    listed = {j.job_id: j for j in world.listed_jobs()}
    for item in body["jobs"]:
        job = listed[item["jobId"]]
        assert item == world.list_item(job)
        assert isinstance(item["createdAt"], float)
        assert item["createdAt"] == round(item["createdAt"], 3)
        assert ("signatureExpiresAt" in item) == (job.status == "Succeeded")
        assert ("signedObject" in item) == (job.status == "Succeeded")


FILTERS: list[dict[str, Any]] = [
    {"status": "Succeeded"},
    {"status": "Failed"},
    {"status": "InProgress"},
    {"platformId": "AWSIoTDeviceManagement-SHA256-ECDSA"},
    {"platformId": "Notation-OCI-SHA384-ECDSA"},
    {"platformId": "NoSuchPlatform"},
    {"requestedBy": "arn:aws:iam::123456789012:role/ci-release"},
    {"isRevoked": True},
    {"isRevoked": False},
    {"jobInvoker": OTHER_ACCOUNT},
    {"signatureExpiresAfter": NOW},
    {"signatureExpiresBefore": NOW},
    {"signatureExpiresAfter": NOW - timedelta(days=90), "signatureExpiresBefore": NOW},
    {"signatureExpiresAfter": NOW + timedelta(days=1, microseconds=123456)},
    {"status": "Succeeded", "platformId": "AWSLambda-SHA384-ECDSA", "isRevoked": False},
    {"jobInvoker": "123456789012", "signatureExpiresBefore": NOW + timedelta(days=365)},
    {"status": "Failed", "signatureExpiresAfter": NOW - timedelta(days=3650)},
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(sorted(f)))
def test_filters_match_brute_force(
    world: World, client: SignerClient, filters: dict[str, Any]
) -> None:
    got: list[str] = []
    for page in client.get_paginator("list_signing_jobs").paginate(
        **filters, PaginationConfig={"PageSize": 25}
    ):
        got.extend(j["jobId"] for j in page["jobs"])
    assert len(got) == len(set(got))
    assert set(got) == brute(world.listed_jobs(), **filters)


def test_filter_fixture_is_not_degenerate(world: World) -> None:
    jobs = world.listed_jobs()
    assert brute(jobs, isRevoked=True)
    assert brute(jobs, status="Failed") and brute(jobs, status="InProgress")
    assert brute(jobs, jobInvoker=OTHER_ACCOUNT)
    assert brute(jobs, signatureExpiresBefore=NOW) and brute(jobs, signatureExpiresAfter=NOW)


def test_expiry_edges_after_inclusive_before_exclusive(world: World, client: SignerClient) -> None:
    job = next(j for j in world.listed_jobs() if j.signature_expires_at is not None)
    exp = job.signature_expires_at
    assert exp is not None
    one_ms = timedelta(milliseconds=1)

    def ids(**f: Any) -> set[str]:
        pages = client.get_paginator("list_signing_jobs").paginate(**f)
        return {j["jobId"] for p in pages for j in p["jobs"]}

    assert job.job_id in ids(signatureExpiresAfter=exp, signatureExpiresBefore=exp + one_ms)
    assert job.job_id not in ids(signatureExpiresAfter=exp + one_ms)
    assert job.job_id not in ids(signatureExpiresBefore=exp)


def test_expiry_filters_accept_epoch_numbers_and_fractional_iso(
    world: World, server: EmulatorServer
) -> None:
    jobs = world.listed_jobs()
    for value in (str(epoch_seconds(NOW)), "2026-12-04T16:00:00.000Z", "2026-12-04T16:00:00Z"):
        seen: set[str] = set()
        query = {"signatureExpiresAfter": value, "maxResults": "25"}
        while True:
            status, _, body = raw_get(server.url, "/signing-jobs", query)
            assert status == 200, body
            seen.update(j["jobId"] for j in body["jobs"])
            if "nextToken" not in body:
                break
            query["nextToken"] = body["nextToken"]
        assert seen == brute(jobs, signatureExpiresAfter=NOW)


# ----------------------------------------------------------------- tokens & validation


def test_next_token_is_bound_to_its_filters(client: SignerClient) -> None:
    first = client.list_signing_jobs(status="Succeeded", maxResults=3)
    token = first["nextToken"]
    # Same filters, different page size: fine.
    assert client.list_signing_jobs(status="Succeeded", maxResults=5, nextToken=token)["jobs"]
    for kwargs in (
        {"status": "Failed"},
        {},
        {"status": "Succeeded", "isRevoked": False},
    ):
        with pytest.raises(client.exceptions.ValidationException) as exc:
            client.list_signing_jobs(nextToken=token, **kwargs)
        assert exc.value.response["Error"]["Message"] == "Invalid nextToken"
    garbled = [token[:-2], token[::-1], "not-a-token", token[:10] + "A" + token[11:], ""]
    for bad in garbled:
        with pytest.raises(client.exceptions.ValidationException, match="Invalid nextToken"):
            client.list_signing_jobs(status="Succeeded", nextToken=bad)
    profile_token = client.list_signing_profiles(maxResults=1)["nextToken"]
    with pytest.raises(client.exceptions.ValidationException):
        client.list_signing_jobs(nextToken=profile_token)


@pytest.mark.parametrize("value", [0, -1, 26, 100])
def test_bad_max_results_is_a_validation_error(server: EmulatorServer, value: int) -> None:
    lax = make_client(server.url, parameter_validation=False)
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        lax.list_signing_jobs(maxResults=value)
    assert error_code(exc) == "ValidationException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.parametrize(
    "query",
    [
        {"maxResults": "ten"},
        {"isRevoked": "yes"},
        {"status": "Done"},
        {"jobInvoker": "12345678901a"},
        {"signatureExpiresAfter": "next tuesday"},
        {"signatureExpiresBefore": "nan"},
    ],
)
def test_malformed_parameters_are_validation_errors(
    server: EmulatorServer, query: dict[str, str]
) -> None:
    status, headers, body = raw_get(server.url, "/signing-jobs", query)
    assert status == 400
    assert headers["x-amzn-ErrorType"] == "ValidationException"
    assert body["__type"] == "ValidationException" and body["message"]


def test_unknown_routes_are_json_404s(server: EmulatorServer) -> None:
    for path in ("/nope", "/signing-jobs/a/b", "/signing-profiles/x"):
        status, headers, body = raw_get(server.url, path)
        assert status == 404
        assert headers["x-amzn-ErrorType"] == "UnknownOperationException"
        assert "message" in body


def test_keep_alive_serves_several_requests_on_one_connection(server: EmulatorServer) -> None:
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        for _ in range(3):
            conn.request("GET", "/signing-platforms")
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read())["platforms"]
    finally:
        conn.close()


# ---------------------------------------------------------------------------- describe


def test_describe_matches_world_for_every_status(world: World, client: SignerClient) -> None:
    jobs = world.listed_jobs()
    picks = [
        next(j for j in jobs if j.status == "Succeeded" and not j.is_revoked),
        next(j for j in jobs if j.is_revoked),
        next(j for j in jobs if j.status == "Failed"),
        next(j for j in jobs if j.status == "InProgress"),
    ]
    for job in picks:
        d = client.describe_signing_job(jobId=job.job_id)
        assert d["jobId"] == job.job_id and d["status"] == job.status
        assert d["requestedBy"] == job.requested_by
        assert d["createdAt"] == job.created_at
        assert d["jobOwner"] == "123456789012" and d["jobInvoker"] == job.job_invoker
        assert d["profileVersion"] == job.profile_version
        assert d["source"]["s3"]["key"] == job.source_key
        assert d.get("completedAt") == (job.completed_at if job.status != "InProgress" else None)
        if job.status == "Succeeded":
            assert d["signatureExpiresAt"] == job.signature_expires_at
            assert d["signedObject"]["s3"]["key"] == job.signed_key
        else:
            assert "signatureExpiresAt" not in d and "signedObject" not in d
        if d["status"] == "Failed":
            assert d["statusReason"]
        if job.is_revoked:
            record = d["revocationRecord"]
            assert record["revokedAt"] == job.revoked_at
            assert record["reason"] == job.revocation_reason
            assert record["revokedBy"] == job.revoked_by
        else:
            assert "revocationRecord" not in d


def test_describe_wire_body(world: World, server: EmulatorServer) -> None:
    job = next(j for j in world.listed_jobs() if j.is_revoked)
    status, _, body = raw_get(server.url, f"/signing-jobs/{job.job_id}")
    assert status == 200
    assert body == world.describe_item(job)
    assert isinstance(body["revocationRecord"]["revokedAt"], float)


def test_describe_unknown_and_aged_out_jobs_are_not_found(
    world: World, client: SignerClient
) -> None:
    listed = {j.job_id for j in world.listed_jobs()}
    aged = [j for j in world.all_jobs() if j.job_id not in listed]
    assert all(j.created_at < NOW - RETENTION for j in aged)
    assert aged, "fixture should contain aged-out jobs"
    for job_id in ("00000000-0000-4000-8000-000000000000", aged[0].job_id):
        with pytest.raises(client.exceptions.ResourceNotFoundException) as exc:
            client.describe_signing_job(jobId=job_id)
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


# ---------------------------------------------------------------- profiles & platforms


def test_list_profiles_hides_canceled_unless_asked(world: World, client: SignerClient) -> None:
    def names(**kwargs: Any) -> dict[str, Any]:
        pages = client.get_paginator("list_signing_profiles").paginate(
            **kwargs, PaginationConfig={"PageSize": 2}
        )
        return {p["profileName"]: p for page in pages for p in page["profiles"]}

    active = names()
    everything = names(includeCanceled=True)
    assert "legacy_lambda" not in active
    assert everything["legacy_lambda"]["status"] == "Canceled"
    assert set(everything) - set(active) == {"legacy_lambda"}
    assert len(everything) == 6
    latest = {p.name: p for p in world.profiles()}  # later versions overwrite earlier ones
    for name, item in everything.items():
        assert item["profileVersion"] == latest[name].version
        assert item["profileVersionArn"].endswith(
            f"/signing-profiles/{name}/{item['profileVersion']}"
        )
    assert everything["containers"]["signatureValidityPeriod"] == {"value": 1, "type": "YEARS"}
    assert everything["lambda_prod"]["signatureValidityPeriod"] == {"value": 135, "type": "MONTHS"}
    only = names(includeCanceled=True, statuses=["Canceled"])
    assert set(only) == {"legacy_lambda"}
    iot = names(platformId="AWSIoTDeviceManagement-SHA256-ECDSA")
    assert set(iot) == {"firmware_release"}


def test_list_platforms(client: SignerClient) -> None:
    platforms = {p["platformId"]: p for p in client.list_signing_platforms()["platforms"]}
    assert platforms["AWSLambda-SHA384-ECDSA"]["displayName"] == "AWS Lambda"
    assert set(platforms) == {
        "AWSLambda-SHA384-ECDSA",
        "AWSIoTDeviceManagement-SHA256-ECDSA",
        "Notation-OCI-SHA384-ECDSA",
    }
    one = client.list_signing_platforms(maxResults=1)
    assert len(one["platforms"]) == 1 and "nextToken" in one


# --------------------------------------------------------------- mutation & retention


def test_pagination_survives_concurrent_changes(
    fresh: tuple[World, EmulatorServer, SignerClient],
) -> None:
    world, _, client = fresh
    before = {j.job_id for j in world.listed_jobs() if not j.is_revoked}
    in_progress = [j.job_id for j in world.listed_jobs() if j.status == "InProgress"]
    seen: list[str] = []
    token: str | None = None
    step = 0
    while True:
        kwargs: dict[str, Any] = {"isRevoked": False, "maxResults": 4}
        if token:
            kwargs["nextToken"] = token
        resp = client.list_signing_jobs(**kwargs)
        seen.extend(j["jobId"] for j in resp["jobs"])
        token = resp.get("nextToken")
        if not token:
            break
        step += 1
        world.add_random_jobs(3)
        if in_progress:
            world.complete_job(in_progress.pop())
        if step % 3 == 0:
            victim = sorted(before - set(seen))[:1]
            for job_id in victim:
                world.revoke_job(job_id)
    still_matching = {j.job_id for j in world.listed_jobs() if not j.is_revoked}
    assert len(seen) == len(set(seen))
    assert (before & still_matching) <= set(seen)


def test_aged_out_and_forgotten_jobs_disappear(
    fresh: tuple[World, EmulatorServer, SignerClient],
) -> None:
    world, _, client = fresh
    world.add_profile("edge_profile", 30, "DAYS")
    old = world.add_job("edge_profile", created_at=NOW - RETENTION + timedelta(hours=1))
    gone = world.listed_jobs()[0]
    assert old.job_id in collect(client, 25)
    world.forget(gone.job_id)
    assert gone.job_id not in collect(client, 25)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_signing_job(jobId=gone.job_id)
    client.describe_signing_job(jobId=old.job_id)
    world.advance(timedelta(hours=2))
    assert old.job_id not in collect(client, 25)
    assert old.job_id not in {j.job_id for j in world.listed_jobs()}
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_signing_job(jobId=old.job_id)


def test_state_changes_keep_position_and_show_up(
    fresh: tuple[World, EmulatorServer, SignerClient],
) -> None:
    world, _, client = fresh
    world.add_profile("p_week", 7, "DAYS")
    job = world.add_job("p_week", status="InProgress")
    order = collect(client, 25)
    assert client.describe_signing_job(jobId=job.job_id)["status"] == "InProgress"
    done = world.complete_job(job.job_id, at=NOW + timedelta(seconds=5))
    assert done.signature_expires_at == NOW + timedelta(days=7, seconds=5)
    d = client.describe_signing_job(jobId=job.job_id)
    assert d["status"] == "Succeeded" and d["signatureExpiresAt"] == done.signature_expires_at
    failed = world.fail_job(world.add_job("p_week", status="InProgress").job_id, "Bad input")
    assert client.describe_signing_job(jobId=failed.job_id)["statusReason"] == "Bad input"
    revoked = world.revoke_job(job.job_id, "Superseded", "arn:aws:iam::123456789012:user/x")
    d = client.describe_signing_job(jobId=job.job_id)
    assert d["revocationRecord"] == {
        "reason": "Superseded",
        "revokedAt": revoked.revoked_at,
        "revokedBy": "arn:aws:iam::123456789012:user/x",
    }
    assert [i for i in collect(client, 25) if i != failed.job_id] == order


def test_raw_items_only_in_unfiltered_listings(
    fresh: tuple[World, EmulatorServer, SignerClient],
) -> None:
    world, server, _ = fresh
    odd = {"jobId": "not-a-uuid", "status": "Exploded", "createdAt": "yesterday"}
    world.add_raw_item(odd)
    world.add_raw_item({"status": "Succeeded"})  # no jobId at all

    def listing(query: dict[str, str]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            _, _, body = raw_get(server.url, "/signing-jobs", {**query, "maxResults": "25"})
            items.extend(body["jobs"])
            if "nextToken" not in body:
                return items
            query = {**query, "nextToken": body["nextToken"]}

    unfiltered = listing({})
    assert odd in unfiltered and {"status": "Succeeded"} in unfiltered
    assert unfiltered == world.listed_items()
    assert odd not in listing({"status": "Succeeded"})
    assert raw_get(server.url, "/signing-jobs/not-a-uuid")[2] == odd
    world.forget("not-a-uuid")
    assert odd not in listing({})


# ------------------------------------------------------------------------ month rules


def test_month_rules_differ() -> None:
    jan31 = datetime(2027, 1, 31, 12, tzinfo=UTC)
    leap = datetime(2028, 2, 29, 8, tzinfo=UTC)
    assert signature_expiry(jan31, 1, "MONTHS", "calendar") == datetime(2027, 2, 28, 12, tzinfo=UTC)
    assert signature_expiry(jan31, 1, "MONTHS", "thirty") == jan31 + timedelta(days=30)
    assert signature_expiry(jan31, 1, "MONTHS", "average") == jan31 + timedelta(seconds=2629746)
    assert signature_expiry(leap, 1, "YEARS", "calendar") == datetime(2029, 2, 28, 8, tzinfo=UTC)
    assert signature_expiry(leap, 1, "YEARS", "thirty") == leap + timedelta(days=360)
    assert signature_expiry(leap, 1, "YEARS", "average") == leap + timedelta(seconds=31556952)
    for rule in ("average", "calendar", "thirty"):
        assert signature_expiry(jan31, 45, "DAYS", rule) == jan31 + timedelta(days=45)


def test_month_rule_reaches_the_wire() -> None:
    seen: dict[str, datetime] = {}
    for rule in ("average", "calendar", "thirty"):
        w = World(seed=3, now=NOW, frozen=True, month_rule=rule)
        w.add_profile("six_months", 6, "MONTHS")
        job = w.add_job(
            "six_months", created_at=datetime(2026, 8, 31, tzinfo=UTC), signing_seconds=0
        )
        with EmulatorServer(w) as srv:
            seen[rule] = make_client(srv.url).describe_signing_job(jobId=job.job_id)[
                "signatureExpiresAt"
            ]
    assert seen["calendar"] == datetime(2027, 2, 28, tzinfo=UTC)
    assert seen["thirty"] == datetime(2026, 8, 31, tzinfo=UTC) + timedelta(days=180)
    assert len(set(seen.values())) == 3


# ---------------------------------------------------------------------------- faults


def test_throttling_is_a_429_that_standard_retries_treat_as_throttling(
    fresh: tuple[World, EmulatorServer, SignerClient], no_backoff: None
) -> None:
    _, server, _ = fresh
    server.faults = Faults(throttle_rate=1.0)
    retrying = make_client(server.url, attempts=3)
    with pytest.raises(retrying.exceptions.TooManyRequestsException) as exc:
        retrying.list_signing_jobs()
    resp = exc.value.response
    assert resp["Error"]["Code"] == "TooManyRequestsException"
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert resp["ResponseMetadata"]["RetryAttempts"] == 2
    assert server.calls["ListSigningJobs"] == 3
    assert server.errors["TooManyRequestsException"] == 3
    op = retrying.meta.service_model.operation_model("ListSigningJobs")
    detector = standard.ThrottlingErrorDetector(standard.RetryEventAdapter())
    ctx = standard.RetryContext(attempt_number=1, operation_model=op, parsed_response=resp)
    assert detector.is_throttling_error_from_context(ctx)


def test_internal_errors_are_500s_and_retried_but_not_throttling(
    fresh: tuple[World, EmulatorServer, SignerClient], no_backoff: None
) -> None:
    _, server, _ = fresh
    server.faults = Faults(error_rate=1.0)
    retrying = make_client(server.url, attempts=2)
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        retrying.describe_signing_job(jobId="whatever")
    assert error_code(exc) == "InternalServiceErrorException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert server.calls["DescribeSigningJob"] == 2
    op = retrying.meta.service_model.operation_model("DescribeSigningJob")
    detector = standard.ThrottlingErrorDetector(standard.RetryEventAdapter())
    ctx = standard.RetryContext(1, operation_model=op, parsed_response=exc.value.response)
    assert not detector.is_throttling_error_from_context(ctx)


def test_fault_rates_are_reproducible_from_the_seed(
    fresh: tuple[World, EmulatorServer, SignerClient],
) -> None:
    _, server, client = fresh

    def pattern() -> list[bool]:
        out = []
        for _ in range(20):
            try:
                client.list_signing_platforms()
                out.append(True)
            except client.exceptions.TooManyRequestsException:
                out.append(False)
        return out

    server.faults = Faults(throttle_rate=0.5, seed=42)
    first = pattern()
    server.faults = Faults(throttle_rate=0.5, seed=42)
    assert pattern() == first
    assert 0 < first.count(False) < 20
    assert server.errors["TooManyRequestsException"] == 2 * first.count(False)
    server.reset_counters()
    assert not server.calls and not server.errors


def test_reset_is_a_connection_error_and_still_counted(
    fresh: tuple[World, EmulatorServer, SignerClient],
) -> None:
    _, server, client = fresh
    server.faults.reset_next = 1
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        client.list_signing_jobs()
    assert server.calls["ListSigningJobs"] == 1 and server.errors["reset"] == 1
    assert server.faults.reset_next == 0
    assert client.list_signing_jobs()["jobs"]


def test_truncated_and_invalid_bodies_lose_the_jobs_key(
    fresh: tuple[World, EmulatorServer, SignerClient],
) -> None:
    """botocore reads without enforcing Content-Length and maps unparsable JSON to
    ``{"message": ...}``, so both faults surface as a 200 response without ``jobs``."""
    _, server, client = fresh
    for fault in ("truncate_next", "invalid_json_next"):
        setattr(server.faults, fault, 1)
        resp = client.list_signing_jobs()
        assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert "jobs" not in resp, fault
        assert client.list_signing_jobs()["jobs"]
    assert server.errors["truncate"] == 1 and server.errors["invalid_json"] == 1


def test_truncation_is_visible_at_the_http_layer(
    fresh: tuple[World, EmulatorServer, SignerClient],
) -> None:
    _, server, _ = fresh
    server.faults.truncate_next = 1
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        conn.request("GET", "/signing-jobs")
        resp = conn.getresponse()
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
    finally:
        conn.close()


def test_hang_is_a_read_timeout(fresh: tuple[World, EmulatorServer, SignerClient]) -> None:
    _, server, _ = fresh
    server.faults.hang_next = 1
    server.faults.hang_seconds = 5
    impatient = make_client(server.url, read_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        impatient.list_signing_jobs()
    assert time.monotonic() - started < 2
    assert server.errors["hang"] == 1
    assert impatient.list_signing_jobs()["jobs"]


def test_reject_token_waits_for_a_request_with_a_token(
    fresh: tuple[World, EmulatorServer, SignerClient],
) -> None:
    _, server, client = fresh
    server.faults.reject_token_next = 1
    first = client.list_signing_jobs(maxResults=2)  # no token: unaffected
    with pytest.raises(client.exceptions.ValidationException, match="Invalid nextToken"):
        client.list_signing_jobs(maxResults=2, nextToken=first["nextToken"])
    assert client.list_signing_jobs(maxResults=2, nextToken=first["nextToken"])["jobs"]
    assert server.errors["ValidationException"] == 1


def test_latency_is_per_request_and_parallel(
    fresh: tuple[World, EmulatorServer, SignerClient],
) -> None:
    _, server, client = fresh
    client.list_signing_platforms()  # warm the connection pool
    server.faults.latency_ms = 150
    durations: list[float] = []

    def call() -> None:
        t = time.monotonic()
        client.list_signing_platforms()
        durations.append(time.monotonic() - t)

    started = time.monotonic()
    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(durations) == 4 and min(durations) >= 0.15
    assert time.monotonic() - started < 0.5


# ------------------------------------------------------------------- world & seeding


def test_seed_is_deterministic_and_fast() -> None:
    started = time.monotonic()
    a = World(seed=9, now=NOW, frozen=True)
    a.seed_organisation(10_000)
    assert time.monotonic() - started < 2
    b = World(seed=9, now=NOW, frozen=True)
    b.seed_organisation(10_000)
    ja, jb = a.listed_jobs(), b.listed_jobs()
    assert [j.job_id for j in ja] == [j.job_id for j in jb]
    assert ja == jb
    statuses = [j.status for j in ja]
    assert 0.95 < statuses.count("Succeeded") / len(ja) < 0.99
    assert 0.02 < statuses.count("Failed") / len(ja) < 0.04
    assert all(j.created_at > NOW - timedelta(hours=1) for j in ja if j.status == "InProgress")
    periods = {(p.validity_value, p.validity_type) for p in a.profiles()}
    assert {(7, "DAYS"), (30, "DAYS"), (6, "MONTHS"), (1, "YEARS"), (3, "YEARS")} <= periods
    assert (135, "MONTHS") in periods
    assert len({j.platform_id for j in ja}) == 3
    assert (
        len({(j.profile_name, j.profile_version) for j in ja if j.profile_name == "containers"})
        == 2
    )
    assert World(seed=8, now=NOW, frozen=True).listed_jobs() == []


def test_add_random_jobs_are_recent_and_listed() -> None:
    w = World(seed=2, now=NOW, frozen=True)
    w.seed_organisation(10)
    new = w.add_random_jobs(50)
    assert len(new) == 50
    assert all(NOW - timedelta(hours=1) <= j.created_at <= NOW for j in new)
    assert all(j.completed_at is None or j.completed_at <= NOW for j in new)
    listed = {j.job_id for j in w.listed_jobs()}
    assert {j.job_id for j in new} <= listed


def test_clock_follows_wall_time_until_frozen() -> None:
    w = World(now=NOW)
    time.sleep(0.02)
    assert w.now > NOW
    w.freeze()
    frozen_at = w.now
    time.sleep(0.01)
    assert w.now == frozen_at
    w.advance(timedelta(days=3))
    assert w.now == frozen_at + timedelta(days=3)
    w.unfreeze()
    time.sleep(0.01)
    assert w.now > frozen_at + timedelta(days=3)
    with pytest.raises(ValueError):
        w.advance(timedelta(seconds=-1))


def test_profile_versions_and_cancel() -> None:
    w = World(seed=1, now=NOW, frozen=True)
    v1 = w.add_profile("dual", 1, "MONTHS", tags={"k": "v"})
    v2 = w.add_profile("dual", 2, "MONTHS")
    assert v1.version != v2.version and len(v2.version) == 10 and v2.version.isalnum()
    assert v1.arn == v2.arn == "arn:aws:signer:us-east-1:123456789012:/signing-profiles/dual"
    job = w.add_job("dual", profile_version=v1.version, created_at=NOW, signing_seconds=0)
    assert job.signature_expires_at == NOW + timedelta(seconds=2629746)
    w.cancel_profile("dual")
    with pytest.raises(ValueError):
        w.add_job("dual")


def test_module_entry_point_parses_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        emulator_main(["--help"])
    assert exc.value.code == 0
    assert "--jobs" in capsys.readouterr().out


def test_serve_prints_url_and_stops_on_interrupt(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from signer_sync.emulator import cli

    def interrupt() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_block", interrupt)
    cli.serve(port=0, jobs=20)
    out = capsys.readouterr().out
    assert "http://127.0.0.1:" in out and "AWS_ENDPOINT_URL_SIGNER=" in out
