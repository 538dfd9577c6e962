"""Incremental planning: which ListSigningJobs listings bring the warehouse up to date.

Pure functions, no I/O. ``ListSigningJobs`` has no created-after filter; the only time
filters are on ``signatureExpiresAt``, which a job gets when it succeeds: signing time
plus its profile's validity period. A job signed in ``[since, until]`` with a validity in
``[low, high]`` therefore expires in ``[since + low, until + high]``: one *expiry band*
per validity in use, widened by a margin, overlapping bands merged.

How AWS turns MONTHS or YEARS into an instant is not documented, so a nominal period
is a range (28-31 days a month, 360-366 a year), never one calendar rule; a range
learned from jobs already seen is widened by :data:`CALENDAR_SLACK` for the same reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

DAY = timedelta(days=1)
#: How far one signing's MONTHS/YEARS period may stray from another's of the same profile
#: under any calendar rule (month lengths differ by up to three days).
CALENDAR_SLACK = timedelta(days=3)
#: Whether the API's expiry bounds are inclusive is not documented: every band reaches one
#: second further on both sides than the margin asks, so neither reading loses a job.
EDGE = timedelta(seconds=1)


@dataclass(frozen=True, order=True)
class ValidityRange:
    """The shortest and longest time from signing (or creation) to expiry for some jobs."""

    low: timedelta
    high: timedelta

    def widened(self, slack: timedelta) -> ValidityRange:
        return ValidityRange(max(timedelta(0), self.low - slack), self.high + slack)


@dataclass(frozen=True, order=True)
class ExpiryBand:
    """One ``signatureExpiresAfter``/``signatureExpiresBefore`` window to list."""

    expires_after: datetime
    expires_before: datetime

    def filters(self) -> dict[str, Any]:
        return {
            "signatureExpiresAfter": self.expires_after,
            "signatureExpiresBefore": self.expires_before,
        }

    def covers(self, instant: datetime) -> bool:
        return self.expires_after < instant < self.expires_before


def nominal_range(value: int | None, unit: str | None) -> ValidityRange | None:
    """A profile's ``signatureValidityPeriod`` as the widest range any calendar gives it."""
    if value is None or value <= 0 or unit is None:
        return None
    match unit.upper():
        case "DAYS":
            return ValidityRange(value * DAY, value * DAY)
        case "MONTHS":
            return ValidityRange(value * 28 * DAY, value * 31 * DAY)
        case "YEARS":
            return ValidityRange(value * 360 * DAY, value * 366 * DAY)
        case _:
            return None


def validity_ranges(
    nominal: Mapping[str, ValidityRange],
    observed: Mapping[str, ValidityRange],
    *,
    calendar_units: Mapping[str, bool] | None = None,
) -> list[ValidityRange]:
    """The validity ranges to cover, one per profile version.

    ``nominal`` and ``observed`` map a profile version key (``name/version``) to a range.
    A version that jobs have been seen for uses the observed range, widened by
    :data:`CALENDAR_SLACK` unless its period is known to be in DAYS; a version known only
    from ListSigningProfiles uses its nominal range. Both sources count, so a profile
    whose nominal period AWS interprets differently is still covered once seen.
    """
    calendar_units = calendar_units or {}
    ranges = []
    for key in sorted(set(nominal) | set(observed)):
        seen = observed.get(key)
        if seen is None:
            ranges.append(nominal[key])
            continue
        if calendar_units.get(key) is not False:
            ranges.append(seen.widened(CALENDAR_SLACK))
            continue
        # Exact days: the learned low includes the quickest signing seen so far; a job
        # signed quicker still expires no earlier than the nominal period says.
        period = nominal.get(key)
        ranges.append(
            seen
            if period is None
            else ValidityRange(min(seen.low, period.low), max(seen.high, period.high))
        )
    return ranges


def plan_bands(
    since: datetime,
    until: datetime,
    ranges: Iterable[ValidityRange],
    margin: timedelta,
) -> list[ExpiryBand]:
    """Expiry bands that hold every job signed in ``[since, until]``, merged and sorted.

    ``margin`` covers clock skew between us and the API and the time a signing takes
    (observed ranges are measured from ``createdAt``, not from completion).
    """
    if until < since:
        raise ValueError("until must not be before since")
    pad = margin + EDGE
    bands = sorted(ExpiryBand(since + r.low - pad, until + r.high + pad) for r in set(ranges))
    merged: list[ExpiryBand] = []
    for band in bands:
        if merged and band.expires_after <= merged[-1].expires_before:
            last = merged.pop()
            band = ExpiryBand(last.expires_after, max(last.expires_before, band.expires_before))
        merged.append(band)
    return merged


def profile_key(name: str | None, version: str | None) -> str:
    return f"{name or ''}/{version or ''}"


def observe(
    ranges: dict[str, ValidityRange], key: str, created: datetime | None, expires: datetime | None
) -> None:
    """Fold one succeeded job's ``expires - created`` into the learned ranges (in place)."""
    if created is None or expires is None or expires <= created:
        return
    span = expires - created
    current = ranges.get(key)
    if current is None:
        ranges[key] = ValidityRange(span, span)
    elif not current.low <= span <= current.high:
        ranges[key] = ValidityRange(min(current.low, span), max(current.high, span))


def ranges_to_json(ranges: Mapping[str, ValidityRange]) -> dict[str, list[float]]:
    return {
        key: [r.low.total_seconds(), r.high.total_seconds()] for key, r in sorted(ranges.items())
    }


def ranges_from_json(data: Any) -> dict[str, ValidityRange]:
    ranges: dict[str, ValidityRange] = {}
    if not isinstance(data, Mapping):
        return ranges
    for key, pair in data.items():
        if (
            isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(v, int | float) for v in pair)
            and 0 <= pair[0] <= pair[1]
        ):
            ranges[str(key)] = ValidityRange(timedelta(seconds=pair[0]), timedelta(seconds=pair[1]))
    return ranges


# -- partitions of a complete listing -----------------------------------------------------

#: A window narrower than this is never split further.
MIN_WINDOW = timedelta(minutes=1)


@dataclass(frozen=True, order=True)
class ExpiryWindow:
    """A part of the expiry axis that one listing reads; ``None`` ends are open.

    ``low``/``high`` are the concrete ends used to bisect an open window; the filters
    reach :data:`EDGE` past each closed end so that windows which share an edge overlap
    whatever the API does at its bounds (the writer drops the duplicates).
    """

    after: datetime | None
    before: datetime | None
    low: datetime
    high: datetime

    def filters(self) -> dict[str, Any]:
        filters: dict[str, Any] = {}
        if self.after is not None:
            filters["signatureExpiresAfter"] = self.after - EDGE
        if self.before is not None:
            filters["signatureExpiresBefore"] = self.before + EDGE
        return filters

    def halves(self) -> tuple[ExpiryWindow, ExpiryWindow] | None:
        """Two windows whose union is this one, or None when it is too narrow to split."""
        low = self.after if self.after is not None else self.low
        high = self.before if self.before is not None else self.high
        if high - low < 2 * MIN_WINDOW:
            return None
        middle = low + (high - low) / 2
        return (
            ExpiryWindow(self.after, middle, self.low, middle),
            ExpiryWindow(middle, self.before, middle, self.high),
        )

    def holds(self, instant: datetime) -> bool:
        """Whether a job expiring at ``instant`` is read by this window (edges included)."""
        return (self.after is None or instant >= self.after) and (
            self.before is None or instant <= self.before
        )


def partition_expiry(
    edges: Iterable[datetime], low: datetime, high: datetime
) -> list[ExpiryWindow]:
    """Windows that cover the whole expiry axis, cut at ``edges``; the first and the last are
    open, so a job expiring before ``low`` or after ``high`` is still read."""
    cuts = sorted({edge for edge in edges if low < edge < high})
    bounds: list[datetime | None] = [None, *cuts, None]
    concrete = [low, *cuts, high]
    return [
        ExpiryWindow(bounds[i], bounds[i + 1], concrete[i], concrete[i + 1])
        for i in range(len(bounds) - 1)
    ]
