"""Pure tests of the expiry-band planning: every job signed after the watermark falls in
some band, bands are merged, margins respected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from signer_sync.emulator.world import MONTH_RULES, signature_expiry
from signer_sync.planning import (
    CALENDAR_SLACK,
    EDGE,
    ExpiryBand,
    ValidityRange,
    nominal_range,
    observe,
    plan_bands,
    ranges_from_json,
    ranges_to_json,
    validity_ranges,
)

BASE = datetime(2026, 1, 1, tzinfo=UTC)
seconds = st.integers(min_value=0, max_value=3 * 86400)
validity = st.builds(
    lambda low, extra: ValidityRange(timedelta(seconds=low), timedelta(seconds=low + extra)),
    st.integers(min_value=3600, max_value=12 * 366 * 86400),
    st.integers(min_value=0, max_value=40 * 86400),
)


@given(
    since=seconds,
    span=seconds,
    ranges=st.lists(validity, min_size=1, max_size=8),
    margin=st.integers(min_value=0, max_value=7200),
    data=st.data(),
)
def test_every_job_signed_after_the_watermark_is_in_a_band(
    since: int, span: int, ranges: list[ValidityRange], margin: int, data: st.DataObject
) -> None:
    start = BASE + timedelta(seconds=since)
    until = start + timedelta(seconds=span)
    bands = plan_bands(start, until, ranges, timedelta(seconds=margin))
    chosen = data.draw(st.sampled_from(ranges))
    signed = start + timedelta(seconds=data.draw(st.integers(0, span)))
    length = chosen.low + (chosen.high - chosen.low) * data.draw(st.floats(0, 1))
    expires = signed + length
    assert any(band.covers(expires) for band in bands)


@given(
    since=seconds,
    span=seconds,
    ranges=st.lists(validity, min_size=1, max_size=8),
    margin=st.integers(min_value=0, max_value=7200),
)
def test_bands_are_sorted_disjoint_and_respect_margins(
    since: int, span: int, ranges: list[ValidityRange], margin: int
) -> None:
    start = BASE + timedelta(seconds=since)
    until = start + timedelta(seconds=span)
    bands = plan_bands(start, until, ranges, timedelta(seconds=margin))
    pad = timedelta(seconds=margin) + EDGE
    assert 1 <= len(bands) <= len(set(ranges))
    for left, right in pairwise(bands):
        assert left.expires_before < right.expires_after  # merged: no overlap, no touch
    for band in bands:
        assert band.expires_after < band.expires_before
    # no band reaches outside the union of the unmerged windows
    assert bands[0].expires_after == start + min(r.low for r in ranges) - pad
    assert bands[-1].expires_before == until + max(r.high for r in ranges) + pad


def test_overlapping_validities_merge_and_far_ones_do_not() -> None:
    start, until = BASE, BASE + timedelta(hours=1)
    week = ValidityRange(timedelta(days=7), timedelta(days=7))
    eight_days = ValidityRange(timedelta(days=7, hours=1), timedelta(days=7, hours=1))
    year = ValidityRange(timedelta(days=365), timedelta(days=366))
    bands = plan_bands(start, until, [week, eight_days, year], timedelta(minutes=5) - EDGE)
    five = timedelta(minutes=5)
    assert bands == [
        ExpiryBand(start + timedelta(days=7) - five, until + timedelta(days=7, hours=1) + five),
        ExpiryBand(start + timedelta(days=365) - five, until + timedelta(days=366) + five),
    ]


def test_until_before_since_is_refused() -> None:
    with pytest.raises(ValueError, match="until"):
        plan_bands(BASE, BASE - timedelta(seconds=1), [], timedelta(0))


@pytest.mark.parametrize(
    ("value", "unit", "low_days", "high_days"),
    [
        (7, "DAYS", 7, 7),
        (6, "MONTHS", 168, 186),
        (135, "MONTHS", 3780, 4185),
        (3, "YEARS", 1080, 1098),
    ],
)
def test_nominal_ranges_hold_every_calendar_rule(
    value: int, unit: str, low_days: int, high_days: int
) -> None:
    period = nominal_range(value, unit)
    assert period == ValidityRange(timedelta(days=low_days), timedelta(days=high_days))
    for rule in MONTH_RULES:
        for day in range(0, 366, 7):
            start = BASE + timedelta(days=day, hours=day % 24)
            length = signature_expiry(start, value, unit, rule) - start
            assert period.low <= length <= period.high, (rule, start)


def test_nominal_range_of_nonsense_is_none() -> None:
    assert nominal_range(None, "DAYS") is None
    assert nominal_range(0, "DAYS") is None
    assert nominal_range(3, "FORTNIGHTS") is None


@given(
    value=st.integers(1, 135),
    unit=st.sampled_from(["MONTHS", "YEARS"]),
    rule=st.sampled_from(MONTH_RULES),
    first=st.integers(0, 4 * 365 * 86400),
    second=st.integers(0, 4 * 365 * 86400),
)
def test_learned_range_plus_calendar_slack_holds_any_later_signing(
    value: int, unit: str, rule: str, first: int, second: int
) -> None:
    """A range learned from one signing of a MONTHS/YEARS profile, widened by the slack,
    holds the validity of any other signing of that profile under the same rule."""
    assume(unit == "MONTHS" or value <= 11)
    seen: dict[str, ValidityRange] = {}
    created = BASE + timedelta(seconds=first)
    observe(seen, "p/1", created, signature_expiry(created, value, unit, rule))
    (learned,) = validity_ranges({}, seen)
    later = BASE + timedelta(seconds=second)
    length = signature_expiry(later, value, unit, rule) - later
    assert learned.low <= length <= learned.high


def test_observed_ranges_widen_calendar_units_and_days_keep_their_nominal_floor() -> None:
    nominal = {
        "a/1": ValidityRange(timedelta(days=168), timedelta(days=186)),
        "b/1": nominal_range(7, "DAYS"),
    }
    seen: dict[str, ValidityRange] = {}
    observe(seen, "a/1", BASE, BASE + timedelta(days=182, seconds=10))
    observe(seen, "b/1", BASE, BASE + timedelta(days=7, seconds=3))
    ranges = validity_ranges(nominal, seen, calendar_units={"a/1": True, "b/1": False})  # type: ignore[arg-type]
    assert ranges == [
        ValidityRange(
            timedelta(days=182, seconds=10) - CALENDAR_SLACK,
            timedelta(days=182, seconds=10) + CALENDAR_SLACK,
        ),
        # a quicker signing than any seen still expires no earlier than 7 days after it
        ValidityRange(timedelta(days=7), timedelta(days=7, seconds=3)),
    ]


def test_ranges_survive_json_and_junk_is_dropped() -> None:
    ranges = {"a/1": ValidityRange(timedelta(days=1), timedelta(days=2))}
    assert ranges_from_json(ranges_to_json(ranges)) == ranges
    assert ranges_from_json({"x": [2, 1], "y": "no", "z": [1]}) == {}
    assert ranges_from_json(None) == {}
