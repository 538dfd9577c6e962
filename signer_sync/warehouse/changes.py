"""What an observation of a job changes in the warehouse: pure comparison, no I/O.

Only the columns an observation carries are compared (a listing never clears what
DescribeSigningJob filled), and a row whose content did not change yields nothing, so
it is not rewritten and no event is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: Changes of these columns name the event; any other change is ``changed``.
_EVENT_ORDER = (("is_revoked", "revoked"), ("status", "status_changed"))
#: What a ``first_seen`` event records (the whole row is in ``signing_jobs`` anyway).
FIRST_SEEN_FIELDS = ("status", "is_revoked", "profile_name", "profile_version", "created_at")


@dataclass(frozen=True, slots=True)
class JobChange:
    """The write one observation needs, and the event that records it."""

    job_id: str
    inserted: bool
    row: Mapping[str, Any]
    """Columns to write (for an insert: every observed column plus sync metadata)."""
    kind: str
    old_values: Mapping[str, Any] | None
    new_values: Mapping[str, Any]


def to_json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def plan_change(
    job_id: str,
    existing: Mapping[str, Any] | None,
    observed: Mapping[str, Any],
    now: datetime,
    *,
    listed: bool = True,
) -> JobChange | None:
    """Compare one observed job with its warehouse row; ``None`` when nothing changed.

    ``listed`` says the API currently returns the job, which clears ``removed_from_api_at``.
    """
    if existing is None:
        row = dict(observed, job_id=job_id, first_seen_at=now, last_changed_at=now)
        new = {key: to_json(observed.get(key)) for key in FIRST_SEEN_FIELDS if key in observed}
        return JobChange(job_id, True, row, "first_seen", None, new)
    changed = {
        key: value for key, value in observed.items() if not _equal(existing.get(key), value)
    }
    reappeared = listed and existing.get("removed_from_api_at") is not None
    if not changed and not reappeared:
        return None
    kind = "changed"
    for column, name in _EVENT_ORDER:
        if column in changed and (column != "is_revoked" or changed[column]):
            kind = name
            break
    if reappeared:
        kind = "reappeared" if kind == "changed" and not _without_raw(changed) else kind
    shown = _without_raw(changed) or {key: changed[key] for key in changed}
    old = {key: to_json(existing.get(key)) for key in shown}
    new = {key: to_json(value) for key, value in shown.items()}
    row = dict(changed, last_changed_at=now)
    if reappeared:
        row["removed_from_api_at"] = None
        old["removed_from_api_at"] = to_json(existing.get("removed_from_api_at"))
        new["removed_from_api_at"] = None
    return JobChange(job_id, False, row, kind, old, new)


def _without_raw(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if key != "raw"}


def _equal(old: Any, new: Any) -> bool:
    if old is None or new is None:
        return old is None and new is None
    if isinstance(old, datetime) and isinstance(new, datetime):
        return old == new
    if isinstance(old, bool) or isinstance(new, bool):
        return (
            bool(old) == bool(new) and isinstance(old, bool | int) and isinstance(new, bool | int)
        )
    return bool(old == new)
