"""Commands that expire: a command the user gave up on must never take effect later.

Why: a Temporal Update sent while no worker runs is held by the server and delivered when a
worker comes back, possibly hours later. The console waits a bounded time and tells the user the
command failed, so applying it later would do something the user was told did not happen. Each
command message therefore carries `not_after` (ISO 8601, UTC), set by the console to "now + how
long I wait", and every Update validator calls `refuse_if_expired(msg.not_after, workflow.now())`
first: once expired the validator rejects the Update, which leaves no trace in the history.

An empty `not_after` never expires, so `temporal workflow update execute ...` without a deadline
keeps working. This module is pure (no I/O), so workflow code may import it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EXPIRED_MESSAGE = "the command expired before a worker ran it; nothing was changed"


def deadline_after(timeout: timedelta, now: datetime | None = None) -> str:
    """The `not_after` value for a command the sender waits `timeout` for."""
    start = now or datetime.now(UTC)
    return (start + timeout).astimezone(UTC).isoformat()


def parse_not_after(not_after: str) -> datetime | None:
    """The deadline as an aware datetime (naive values are read as UTC); None when empty."""
    if not not_after:
        return None
    try:
        value = datetime.fromisoformat(not_after)
    except ValueError:
        raise ValueError(
            f"not_after {not_after!r} is not an ISO 8601 time such as 2026-12-01T20:00:00+00:00"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def refuse_if_expired(not_after: str, now: datetime) -> None:
    """Raise ValueError (an Update validator's rejection) once `now` is past `not_after`."""
    deadline = parse_not_after(not_after)
    if deadline is None:
        return
    current = now if now.tzinfo else now.replace(tzinfo=UTC)
    if current > deadline:
        raise ValueError(EXPIRED_MESSAGE)
