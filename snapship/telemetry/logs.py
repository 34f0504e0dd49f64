"""Structured logs that cannot carry a secret.

Why: the client runs unattended next to vCenter; its logs are shipped to whatever collector the
operator has, so each line is one JSON object (time, level, logger, message, source_server,
run_id, extra fields) that a collector can index without parsing prose. The VM and run a line
belongs to come from a context variable bound once per activity (`log_context(...)`), so deep
library code does not need to pass them around, and asyncio tasks and threads started from a
bound context inherit them.

Redaction is a handler filter, so it sees every record that reaches our handlers, whichever
logger (boto3, pyvmomi, temporalio) produced it. It masks, with "***":
- every value registered through `snapship.secrets` (store reads and writes, `Secret(...)`);
- `key=value` / `"key": "value"` pairs whose key names a credential (password, secret, token,
  aws_secret_access_key, ...), and AWS access key ids (AKIA.../ASIA...);
in the formatted message, in extra string fields, and in exception and stack text.
Values shorter than 4 characters are not masked as free text (masking every "a" would destroy
the log without protecting anything); key=value patterns still catch them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TextIO

from snapship import secrets as _secrets

MASK = "***"
MIN_MASKED_LENGTH = 4

_SENSITIVE_KEYS = (
    r"aws_secret_access_key|secret_access_key|secretaccesskey|aws_session_token|session_token"
    r"|sessiontoken|vcenter_password|vcenter-password|password|passwd|pwd|secret|token"
    r"|codec_key|api_key|apikey|authorization|x-amz-security-token"
)
# key <sep> value, where key may be quoted and sep is = or :, value up to a delimiter.
_PAIR_RE = re.compile(
    r"(?P<key>[\"']?[\w-]*(?:" + _SENSITIVE_KEYS + r")[\"']?\s*[=:]\s*)"
    r"(?P<quote>[\"']?)(?P<value>(?:Bearer |Basic )?[^\s\"',;&}\]]+)",
    re.IGNORECASE,
)
# Cheap pre-check (substring test on the lower-cased text): most lines name no credential key,
# so the pair pattern is skipped for them. Every alternative in _SENSITIVE_KEYS contains a stem.
_KEYWORD_STEMS = ("passw", "pwd", "secret", "token", "codec_key", "api_key", "apikey", "authoriz")
_AWS_KEY_ID_RE = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "snapship_log_context", default=_EMPTY
)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None)).keys()
) | {"message", "asctime", "taskName"}


# -- context ----------------------------------------------------------------------------------


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Bind fields (source_server=..., run_id=...) to every log line inside the block."""
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def bind_context(**fields: Any) -> contextvars.Token[Mapping[str, Any]]:
    """Non-block form of `log_context`; undo with `unbind_context(token)`."""
    return _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})


def unbind_context(token: contextvars.Token[Mapping[str, Any]]) -> None:
    _context.reset(token)


def current_context() -> Mapping[str, Any]:
    return dict(_context.get())


# -- redaction --------------------------------------------------------------------------------


class Redactor:
    """Masks registered secret values and credential-looking pairs in text."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._values_re: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        if not isinstance(value, str) or len(value) < MIN_MASKED_LENGTH:
            return
        with self._lock:
            if value in self._values:
                return
            self._values.add(value)
            ordered = sorted(self._values, key=len, reverse=True)
            self._values_re = re.compile("|".join(re.escape(v) for v in ordered))

    def redact(self, text: str) -> str:
        if not text:
            return text
        pattern = self._values_re
        if pattern is not None:
            text = pattern.sub(MASK, text)
        lowered = text.lower()
        if any(stem in lowered for stem in _KEYWORD_STEMS):
            text = _PAIR_RE.sub(lambda m: f"{m['key']}{m['quote']}{MASK}", text)
        if "AKIA" in text or "ASIA" in text:
            text = _AWS_KEY_ID_RE.sub(MASK, text)
        return text


REDACTOR = Redactor()
_secrets.add_secret_value_listener(REDACTOR.add)


def redact(text: str) -> str:
    """Mask secrets in `text` (for strings that leave the process other than through logging)."""
    return REDACTOR.redact(text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return REDACTOR.redact(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return REDACTOR.redact(str(value))


class RedactionFilter(logging.Filter):
    """Rewrites a record in place so no handler or formatter downstream sees a secret.

    The message is formatted here (msg % args), redacted, and args cleared; exception and stack
    text are rendered and redacted into `exc_text`/`stack_info`, which `logging.Formatter`
    reuses instead of rendering the traceback again.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not hide the line
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = REDACTOR.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = REDACTOR.redact(record.exc_text)
            # The rendered, redacted text is what every formatter will print; dropping the live
            # exception stops a formatter or handler from re-rendering the unredacted one.
            record.exc_info = None
        if record.stack_info:
            record.stack_info = REDACTOR.redact(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _RECORD_ATTRS:
                setattr(record, key, _redact_value(value))
        return True


class ContextFilter(logging.Filter):
    """Copies the bound context (source_server, run_id, ...) onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


# -- formatting -------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line; always has source_server and run_id (null when unbound)."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "source_server": getattr(record, "source_server", None),
            "run_id": getattr(record, "run_id", None),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and key not in event:
                event[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            event["exception"] = record.exc_text
        if record.stack_info:
            event["stack"] = record.stack_info
        # Last line of defence: whatever reached the event by a path the filter did not cover
        # (a logger name, an object's str) is masked in the final text as well.
        return REDACTOR.redact(json.dumps(event, default=str, ensure_ascii=False))


def make_handler(stream: TextIO | None = None) -> logging.Handler:
    """A stream handler with context, redaction (in that order) and JSON formatting."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactionFilter())
    handler.setFormatter(JsonFormatter())
    handler.set_name("snapship-json")
    return handler


def configure_logging(level: int | str = logging.INFO, stream: TextIO | None = None) -> None:
    """Route the root logger through one JSON, redacting handler (idempotent).

    Existing root handlers get the redaction filter too, so nothing already configured (e.g.
    by pytest or the Temporal SDK) prints a secret either.
    """
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "snapship-json":
            root.removeHandler(existing)
        elif not any(isinstance(f, RedactionFilter) for f in existing.filters):
            existing.addFilter(RedactionFilter())
    root.addHandler(make_handler(stream))
    root.setLevel(level)
    # Chatty libraries: their DEBUG output can include request bodies.
    floor = max(logging.INFO, root.getEffectiveLevel())
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(floor)
