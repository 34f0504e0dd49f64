"""One-line texts for people: flattening a message, and the line of an activity that retries.

Pure (no pyvmomi, no boto3): the workflow renders the retry line into the Web UI's details, the
console into its ERROR column, and `snapship.faults` flattens every fault message with it.
"""

from __future__ import annotations

import re
from datetime import datetime

MAX_MESSAGE_CHARS = 400

_REPR = re.compile(r"<[^<>]*\bobject at 0x[0-9a-f]+>|\(vim\.[\w.]+\)|\(vmodl\.[\w.]+\)")


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Collapse whitespace (newlines included), drop Python/pyvmomi reprs, cap the length."""
    flat = " ".join(_REPR.sub("", text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _next_try(next_try_at: str, now: datetime | None) -> str:
    try:
        moment = datetime.fromisoformat(next_try_at)
    except ValueError:
        return ""
    if now is None:  # a reader without a fresh clock (the workflow): the time itself
        return f"; next try at {moment.strftime('%H:%M:%S')}Z"
    left = (moment - now).total_seconds()
    return f"; next try in {max(0, round(left))} s" if left > 0 else "; trying now"


def retry_line(attempt: int, max_attempts: int, message: str, next_try_at: str,
               now: datetime | None, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``retrying (attempt 3 of 10): <reason>; next try in 40 s`` for the console and the Web UI.

    ``attempt`` is the attempt that comes next; ``max_attempts`` 0 means no cap. The time left
    needs the reader's clock (a workflow query cannot read a fresh one); without ``now`` the line
    names the UTC time of the next try. Within ``limit`` characters the reason is shortened,
    never the attempt count or the next try.
    """
    of = f" of {max_attempts}" if max_attempts else ""
    head = f"retrying (attempt {attempt}{of}): "
    tail = _next_try(next_try_at, now) if next_try_at else ""
    room = max(10, limit - len(head) - len(tail))
    return head + one_line(message, room) + tail
