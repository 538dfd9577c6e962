"""Property tests: the record mapping over whatever JSON the Signer API could send, and the
write path over whatever the mapping lets through.

Inputs are what ``json.loads`` can produce from a hostile or broken API: objects with
missing, null or wrongly typed fields, nested junk, huge and incompressible strings, odd
unicode (NUL, lone surrogates, BOM, non-characters, RTL marks), numbers that are NaN,
infinite, negative or too large for a float, and timestamps as numbers, numeric strings and
ISO 8601 strings in and out of range. The mapping must never raise, and whatever it keeps
must be storable in PostgreSQL and SQLite - which the last two tests prove by storing it.
"""

from __future__ import annotations

import json
import operator
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from signer_sync.records import (
    DETAIL_COLUMNS,
    LIST_COLUMNS,
    MAX_RAW_BYTES,
    MAX_TEXT,
    Rejection,
    SigningJob,
    SigningProfile,
    map_describe_item,
    map_list_item,
    map_profile,
    parse_timestamp,
)
from signer_sync.warehouse.schema import (
    listing_seen,
    rejected_records,
    signing_job_events,
    signing_jobs,
    signing_profiles,
)
from signer_sync.warehouse.writer import JobWriter
from tests.conftest import Warehouse

# -- what the wire can carry ----------------------------------------------------------

ODD_CHARS = [
    "\x00",
    "\ud800",  # lone surrogates: json.loads turns "\ud800" escapes into these
    "\udfff",
    "\ud83d",
    "\ufeff",
    "\uffff",
    "\ufffe",
    "\U0010ffff",
    "\u202e",
    "\u0301",
    "\r\n",
    "\\",
    '"',
    "'",
    "\x7f",
    "\x1b[31m",
    "😀",
    "İ",
    "%s",
    "'; DROP TABLE signing_jobs; --",
]


def _incompressible(seed: int, size: int) -> str:
    """Random code points from every plane (surrogates included): what a compressor (and
    so PostgreSQL's index-tuple compression) cannot shrink."""
    rng = random.Random(seed)
    ranges = ((0x20, 0x7F), (0x80, 0x800), (0x800, 0xD800), (0xD800, 0xE000), (0xE000, 0x110000))
    out = []
    for _ in range(size):
        low, high = rng.choice(ranges)
        out.append(chr(rng.randrange(low, high)))
    return "".join(out)


short_text = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=30),
    st.lists(st.sampled_from(ODD_CHARS), max_size=6).map("".join),
)
huge_text = st.one_of(
    # long and incompressible: beyond MAX_TEXT characters and beyond a btree index row
    st.builds(_incompressible, st.integers(0, 2**32), st.integers(700, 9000)),
    # very long and cheap to build: beyond MAX_RAW_BYTES
    st.builds(
        operator.mul,
        st.sampled_from(["a", "\x00", "é", "\ud800", "😀"]),
        st.integers(3000, 300_000),
    ),
)
any_text = st.one_of(short_text, short_text, huge_text)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.sampled_from([10**400, -(10**400), 2**63, -(2**63) - 1]),  # valid JSON, no float
    st.floats(allow_nan=True, allow_infinity=True),  # json.loads accepts NaN and Infinity
    short_text,
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(short_text, children, max_size=4)
    ),
    max_leaves=12,
)

_ZONES = st.sampled_from(
    [None, UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12, minutes=-30))]
)
iso_timestamps = st.builds(
    lambda moment, zone, sep: moment.replace(tzinfo=zone).isoformat(sep=sep),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    _ZONES,
    st.sampled_from(["T", " "]),
)
timestamps = st.one_of(
    st.floats(min_value=-1e10, max_value=3e11),  # around 1970..9999 in epoch seconds
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            0,
            -1,
            253402214400,  # 9999-12-31T00:00:00Z
            253402300799.999,  # 9999-12-31T23:59:59.999Z
            253402300800,  # 10000-01-01
            10**400,  # a JSON integer no float can hold
            "1969-12-31T23:59:59Z",
            "1900-01-01T00:00:00",
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-05:00",
            "9999-12-31T23:59:59",
            "2024-02-30T00:00:00Z",
            "2024-01-01T00:00:00.123456789Z",
            "NaN",
            "-Infinity",
            "1e400",
            "  1700000000.5 ",
            "1_700_000_000",
            "",
            "now",
        ]
    ),
    iso_timestamps,
    st.floats(min_value=-1e10, max_value=3e11).map(repr),
    json_values,
)
booleans = st.one_of(
    st.booleans(), st.sampled_from(["true", "false", "TRUE", "False", "yes", "1", 1, 0])
)
statuses = st.sampled_from(["Succeeded", "Failed", "InProgress", "Revoked", "Quarantined"])


def _field(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field as the API should send it, or junk of any other shape."""
    return st.one_of(strategy, strategy, json_values, huge_text)


def _object(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A JSON object with any subset of ``fields`` plus unknown keys, or junk instead."""
    known = st.fixed_dictionaries({}, optional=fields)
    extra = st.dictionaries(short_text, json_values, max_size=3)
    return st.one_of(st.builds(lambda k, e: {**e, **k}, known, extra), known, json_values)


s3_location = _object(
    s3=_object(bucketName=_field(any_text), key=_field(any_text), version=_field(any_text))
)
job_ids = st.one_of(
    st.uuids().map(str),
    st.uuids().map(str),
    short_text,
    huge_text,
    st.sampled_from(["", "   ", "a" * 256, "a" * 257, "job\x00id", "job\ud800id"]),
    json_scalars,
)
list_items = st.one_of(
    st.builds(
        lambda known, extra: {**extra, **known},
        st.fixed_dictionaries(
            {},
            optional={
                "jobId": job_ids,
                "status": _field(statuses),
                "isRevoked": _field(booleans),
                "createdAt": timestamps,
                "signatureExpiresAt": timestamps,
                "profileName": _field(any_text),
                "profileVersion": _field(any_text),
                "platformId": _field(any_text),
                "platformDisplayName": _field(any_text),
                "source": s3_location,
                "signedObject": s3_location,
                "signingMaterial": _object(certificateArn=_field(any_text)),
                "jobOwner": _field(any_text),
                "jobInvoker": _field(any_text),
            },
        ),
        st.dictionaries(short_text, json_values, max_size=3),
    ),
    json_values,  # not an object at all
)
describe_items = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "jobId": job_ids,
            "status": _field(statuses),
            "requestedBy": _field(any_text),
            "completedAt": timestamps,
            "statusReason": _field(any_text),
            "signatureExpiresAt": timestamps,
            "revocationRecord": _object(
                revokedAt=timestamps, revokedBy=_field(any_text), reason=_field(any_text)
            ),
            "createdAt": timestamps,
        },
    ),
    json_values,
)
profile_items = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "profileVersionArn": _field(any_text),
            "profileName": _field(any_text),
            "profileVersion": _field(any_text),
            "arn": _field(any_text),
            "platformId": _field(any_text),
            "platformDisplayName": _field(any_text),
            "status": _field(st.sampled_from(["Active", "Canceled", "Revoked"])),
            "signatureValidityPeriod": _object(
                value=_field(st.integers(-5, 200_000)),
                type=_field(st.sampled_from(["DAYS", "MONTHS", "YEARS"])),
            ),
            "signingMaterial": _object(certificateArn=_field(any_text)),
            "tags": _field(st.dictionaries(short_text, short_text, max_size=3)),
        },
    ),
    json_values,
)

# A nesting far deeper than any Signer item, but still what json.loads accepts.
DEEP: Any = json.loads("[" * 400 + "]" * 400)
DEEP_OBJECT: Any = json.loads('{"a":' * 300 + "1" + "}" * 300)

# -- what storable means ----------------------------------------------------------------

TEXT_COLUMNS = {
    name
    for name in (*LIST_COLUMNS, *DETAIL_COLUMNS)
    if name not in {"is_revoked", "raw"} and not name.endswith("_at")
}
TIME_COLUMNS = {name for name in (*LIST_COLUMNS, *DETAIL_COLUMNS) if name.endswith("_at")}
#: A btree index entry must fit in about a third of an 8 kB page (2704 bytes); this is
#: what one text value of an index may take.
INDEXED_BYTES = 1024
INDEXED_JOB_COLUMNS = {"status", "profile_name"}
INDEXED_PROFILE_COLUMNS = {"profile_name", "profile_version"}


def _walk_strings(value: Any) -> Iterator[str]:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for key, child in node.items():
                assert isinstance(key, str), f"JSON key {key!r} is not a string"
                yield key
                stack.append(child)
        elif isinstance(node, list):
            stack.extend(node)
        else:
            assert node is None or isinstance(node, bool | int | float), type(node)


def assert_storable_text(value: Any, what: str, max_bytes: int | None = None) -> None:
    if value is None:
        return
    assert isinstance(value, str), f"{what}: {type(value).__name__}"
    assert "\x00" not in value, f"{what}: contains NUL"
    encoded = value.encode("utf-8")  # raises on lone surrogates: no database takes them
    assert len(value) <= MAX_TEXT, f"{what}: {len(value)} characters"
    if max_bytes is not None:
        assert len(encoded) <= max_bytes, f"{what}: {len(encoded)} bytes in an indexed column"


def assert_storable_time(value: Any, what: str) -> None:
    if value is None:
        return
    assert isinstance(value, datetime), f"{what}: {type(value).__name__}"
    assert value.tzinfo is not None and value.utcoffset() == timedelta(0), f"{what}: not UTC"
    assert 1970 <= value.year <= 9999, f"{what}: {value.isoformat()}"


def assert_storable_json(value: Any, what: str, max_bytes: int = MAX_RAW_BYTES + 1024) -> None:
    text = json.dumps(value, allow_nan=False)
    assert len(text) <= max_bytes, f"{what}: {len(text)} bytes of JSON"
    for string in _walk_strings(value):
        assert "\x00" not in string, f"{what}: NUL in a JSON string"
        string.encode("utf-8")


def assert_storable_job(job: SigningJob) -> None:
    assert isinstance(job.job_id, str) and job.job_id.strip(), repr(job.job_id)
    assert len(job.job_id) <= 256
    assert_storable_text(job.job_id, "job_id", max_bytes=INDEXED_BYTES)
    for name, value in job.values.items():
        if name in TEXT_COLUMNS:
            limit = INDEXED_BYTES if name in INDEXED_JOB_COLUMNS else None
            assert_storable_text(value, name, limit)
        elif name in TIME_COLUMNS:
            assert_storable_time(value, name)
        elif name == "is_revoked":
            assert value is None or isinstance(value, bool), repr(value)
        elif name == "raw":
            assert_storable_json(value, "raw")
        else:
            raise AssertionError(f"unknown column {name}")


def assert_storable_rejection(rejection: Rejection) -> None:
    assert isinstance(rejection.reason, str) and rejection.reason
    assert_storable_text(rejection.reason, "reason")
    assert_storable_json(rejection.payload, "payload")


def _clean(value: Any) -> bool:
    """True when ``value`` has nothing a database would refuse (so ``raw`` must equal it)."""
    try:
        json.dumps(value, allow_nan=False)
        return all("\x00" not in s and s.encode("utf-8") for s in _walk_strings(value))
    except (ValueError, UnicodeEncodeError):
        return False


def _good_job_id(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip()) and len(value) <= 256 and _clean(value)


# -- properties of the mapping ----------------------------------------------------------

FAST = settings(max_examples=400, deadline=None)


@FAST
@given(list_items)
@example({"jobId": "deep", "status": "Succeeded", "nested": DEEP})
@example({"jobId": "deep-object", "extra": DEEP_OBJECT})
@example(DEEP)
@example({"jobId": "huge-int-time", "createdAt": 10**400, "signatureExpiresAt": -(10**400)})
@example({"jobId": "old-iso", "createdAt": "1900-01-01T00:00:00Z"})
@example(
    {"jobId": "wide", "status": _incompressible(1, 4000), "profileName": _incompressible(2, 9)}
)
@example({"jobId": "surrogate-\udc00"})
def test_map_list_item_never_raises_and_keeps_only_storable_values(item: Any) -> None:
    mapped = map_list_item(item, region="us-east-1", source="main")
    assert isinstance(mapped, SigningJob | Rejection)
    if isinstance(mapped, Rejection):
        assert_storable_rejection(mapped)
        return
    assert set(mapped.values) == set(LIST_COLUMNS)
    assert_storable_job(mapped)
    assert isinstance(item, dict) and mapped.job_id == item["jobId"]
    assert mapped.values["source"] == "main" and mapped.values["region"] == "us-east-1"
    if _clean(item):
        assert mapped.values["raw"] == item  # the item exactly as received


@FAST
@given(list_items)
def test_an_object_with_a_usable_job_id_is_kept_not_rejected(item: Any) -> None:
    """Odd values become None; only the jobId (or sheer size) quarantines an item."""
    if not isinstance(item, dict) or not _good_job_id(item.get("jobId")):
        return
    small = len(json.dumps(item, default=str)) < MAX_RAW_BYTES // 2
    mapped = map_list_item(item, region=None, source="main")
    if small:
        assert isinstance(mapped, SigningJob), mapped
    if isinstance(mapped, SigningJob):
        status = item.get("status")
        if isinstance(status, str) and _clean(status) and len(status) < 200:
            assert mapped.values["status"] == status
        created = item.get("createdAt")
        if isinstance(created, int | float) and not isinstance(created, bool):
            if 0 <= created <= 253402214400:
                assert mapped.values["created_at"] == datetime.fromtimestamp(created, tz=UTC)
            else:
                assert mapped.values["created_at"] is None


@FAST
@given(describe_items)
@example({"jobId": "job\x00id", "status": "Succeeded"})
@example({"jobId": "job\ud800id"})
@example({"jobId": "a" * 300})
@example({"jobId": "j", "revocationRecord": {"revokedAt": 10**400}, "completedAt": "0001-01-01"})
def test_map_describe_item_never_raises_and_keeps_only_storable_values(item: Any) -> None:
    mapped = map_describe_item(item)
    assert isinstance(mapped, SigningJob | Rejection)
    if isinstance(mapped, Rejection):
        assert_storable_rejection(mapped)
        return
    assert set(DETAIL_COLUMNS) <= set(mapped.values)
    assert set(mapped.values) <= {*DETAIL_COLUMNS, "status", "is_revoked", "signature_expires_at"}
    assert_storable_job(mapped)
    if isinstance(item.get("revocationRecord"), dict):
        assert mapped.values["is_revoked"] is True


@FAST
@given(profile_items)
@example({"profileVersionArn": "arn\x00\ud800", "profileName": "p"})
@example({"profileVersionArn": _incompressible(3, 5000), "profileName": _incompressible(4, 5000)})
@example({"profileName": "p", "signatureValidityPeriod": {"value": 10**400, "type": "DAYS"}})
@example({"profileName": "p", "tags": DEEP_OBJECT})
def test_map_profile_never_raises_and_keeps_only_storable_values(item: Any) -> None:
    mapped = map_profile(item)
    assert isinstance(mapped, SigningProfile | Rejection)
    if isinstance(mapped, Rejection):
        assert_storable_rejection(mapped)
        return
    assert_storable_text(mapped.profile_version_arn, "profile_version_arn", INDEXED_BYTES)
    assert mapped.profile_version_arn
    values = mapped.values
    for name in ("profile_name", "profile_version"):
        assert_storable_text(values[name], name, INDEXED_BYTES)
    for name in ("arn", "platform_id", "platform_display_name", "status", "validity_type"):
        assert_storable_text(values[name], name)
    assert_storable_text(values["certificate_arn"], "certificate_arn")
    validity = values["validity_value"]
    assert validity is None or (type(validity) is int and 0 < validity < 100_000)
    assert values["tags"] is None or isinstance(values["tags"], dict)
    assert_storable_json(values["tags"], "tags")
    assert_storable_json(values["raw"], "raw")


@FAST
@given(timestamps)
def test_parse_timestamp_is_total_and_bounded(value: Any) -> None:
    parsed = parse_timestamp(value)
    assert_storable_time(parsed, repr(value)[:80])
    if isinstance(value, int | float) and not isinstance(value, bool):
        if 0 <= value <= 253402214400:
            assert parsed == datetime.fromtimestamp(value, tz=UTC)
        elif not 0 <= value <= 253402214400:
            assert parsed is None


# -- whatever is kept can be stored, and reads back the same ---------------------------


def _numbers_as_decimals(value: Any) -> Any:
    """JSON with numbers compared by value: jsonb keeps 1e308 as a 309-digit integer."""
    return json.loads(json.dumps(value), parse_float=Decimal, parse_int=Decimal)


def _same(column: str, stored: Any, expected: Any) -> bool:
    if column in {"raw", "tags", "payload"}:
        return bool(_numbers_as_decimals(stored) == _numbers_as_decimals(expected))
    return bool(stored == expected) and type(stored) is type(expected)


def _empty_tables(wh: Warehouse) -> None:
    with wh.engine.begin() as connection:
        for table in (
            signing_jobs,
            signing_job_events,
            rejected_records,
            signing_profiles,
            listing_seen,
        ):
            connection.execute(delete(table))


DB = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@DB
@given(
    listed=st.lists(list_items, max_size=8),
    described=st.lists(describe_items, max_size=4),
    profiles=st.lists(profile_items, max_size=4),
    repeat=st.booleans(),
)
def test_every_mapped_record_is_stored_exactly_or_quarantined(
    warehouse: Warehouse,
    listed: list[Any],
    described: list[Any],
    profiles: list[Any],
    repeat: bool,
) -> None:
    _empty_tables(warehouse)
    if repeat and listed:  # the same jobId twice in a batch and across batches
        listed = [*listed, *listed[:2]]
    writer = JobWriter(warehouse.engine, source="main", run_id=1)

    jobs = [map_list_item(item, region="us-east-1", source="main") for item in listed]
    details = [map_describe_item(item) for item in described]
    mapped_profiles = [map_profile(item) for item in profiles]
    rejections = [r for r in (*jobs, *details, *mapped_profiles) if isinstance(r, Rejection)]

    list_jobs = [job for job in jobs if isinstance(job, SigningJob)]
    detail_jobs = [job for job in details if isinstance(job, SigningJob)]
    kept_profiles = [p for p in mapped_profiles if isinstance(p, SigningProfile)]
    writer.write_jobs(list_jobs, record_seen=True)
    writer.write_jobs(detail_jobs)
    writer.write_rejections(rejections, "ListSigningJobs")
    writer.write_profiles(kept_profiles, "us-east-1")

    expected: dict[str, dict[str, Any]] = {}
    for job in (*list_jobs, *detail_jobs):
        expected[job.job_id] = {**expected.get(job.job_id, {}), **job.values}
    with warehouse.engine.connect() as connection:
        rows = {r["job_id"]: dict(r) for r in connection.execute(select(signing_jobs)).mappings()}
        stored_rejections = list(connection.execute(select(rejected_records)).mappings())
        stored_profiles = {
            r["profile_version_arn"]: dict(r)
            for r in connection.execute(select(signing_profiles)).mappings()
        }
    assert set(rows) == set(expected)
    for job_id, values in expected.items():
        for column, value in values.items():
            assert _same(column, rows[job_id][column], value), (
                f"{job_id!r}.{column}: stored {rows[job_id][column]!r} != {value!r}"
            )
    assert len(stored_rejections) == len(rejections)
    by_reason = sorted((r.reason, json.dumps(r.payload, sort_keys=True)) for r in rejections)
    assert sorted(r["reason"] for r in stored_rejections) == [reason for reason, _ in by_reason]
    for row in stored_rejections:
        assert any(
            _same("payload", row["payload"], r.payload)
            for r in rejections
            if r.reason == row["reason"]
        )
    expected_profiles = {p.profile_version_arn: p.values for p in kept_profiles}
    assert set(stored_profiles) == set(expected_profiles)
    for arn, values in expected_profiles.items():
        for column, value in values.items():
            assert _same(column, stored_profiles[arn][column], value), (arn, column)


@pytest.mark.parametrize("warehouse", ["postgresql"], indirect=True)
def test_the_hostile_examples_are_stored_on_postgresql(warehouse: Warehouse) -> None:
    """The specific items that broke the mapping or the write path once, through the same
    write path, on the stricter database."""
    items = [
        {"jobId": "deep", "status": "Succeeded", "nested": DEEP},
        {"jobId": "huge-int-time", "createdAt": 10**400},
        {"jobId": "old-iso", "createdAt": "1900-01-01T00:00:00Z"},
        {
            "jobId": "wide",
            "status": _incompressible(1, 4000),
            "profileName": _incompressible(2, 3000),
        },
        {"jobId": "surrogate-\udc00"},
        {"jobId": "nul\x00"},
        {"jobId": "odd-json", "x": [float("nan"), float("inf"), 1e308, -0.0, "\x00\ud800"]},
    ]
    mapped = [map_list_item(item, region="us-east-1", source="main") for item in items]
    writer = JobWriter(warehouse.engine, source="main", run_id=1)
    writer.write_jobs([m for m in mapped if isinstance(m, SigningJob)])
    writer.write_rejections([m for m in mapped if isinstance(m, Rejection)], "ListSigningJobs")
    with warehouse.engine.connect() as connection:
        rows = {r["job_id"]: dict(r) for r in connection.execute(select(signing_jobs)).mappings()}
        rejected = list(connection.execute(select(rejected_records)).mappings())
    assert {"huge-int-time", "old-iso", "wide", "odd-json"} <= set(rows)
    assert rows["huge-int-time"]["created_at"] is None
    assert rows["old-iso"]["created_at"] is None
    assert rows["odd-json"]["raw"]["x"][:2] == [None, None]
    assert len(rows) + len(rejected) == len(items)


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_a_bare_number_item_is_quarantined_exactly_on_sqlite(warehouse: Warehouse) -> None:
    items = [12345678901234567890123, 10**400]
    rejected = [map_list_item(item, region=None, source="main") for item in items]
    assert all(isinstance(r, Rejection) for r in rejected)
    writer = JobWriter(warehouse.engine, source="main", run_id=1)
    writer.write_rejections([r for r in rejected if isinstance(r, Rejection)], "ListSigningJobs")
    with warehouse.engine.connect() as connection:
        payloads = connection.execute(
            select(rejected_records.c.payload).order_by(rejected_records.c.rejected_id)
        ).scalars()
        assert list(payloads) == items
