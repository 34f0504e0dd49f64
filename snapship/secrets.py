"""Credentials at rest and in memory.

Why this module exists: the architecture says credentials never enter workflow inputs, results,
heartbeats, search attributes or logs. Workflows therefore carry only secret *names* (the
constants below); activities resolve a name to a value through a `SecretStore` on the worker's
disk, and the value travels as a `Secret`, whose `str`/`repr`/`format` never show it, so an
accidental f-string or a dataclass repr in a log line leaks nothing.

The store is one JSON file, mode 0600 from the moment it exists (created through `os.open` with
an explicit mode, so the umask cannot widen it), replaced atomically (write a sibling temp file,
fsync, rename) so a crash never leaves half a file. A file that group or others can read is
refused with the exact `chmod` that fixes it, rather than silently trusted.

Every value read or written here is registered with the log redaction filter
(`snapship.telemetry.logs`), so even a value printed by third-party code is masked.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

VCENTER_PASSWORD = "vcenter_password"
AWS_ACCESS_KEY_ID = "aws_access_key_id"
AWS_SECRET_ACCESS_KEY = "aws_secret_access_key"
AWS_SESSION_TOKEN = "aws_session_token"
CODEC_KEY = "codec_key"

#: The names snapship itself uses (workflows carry these, never values).
KNOWN_SECRET_NAMES: frozenset[str] = frozenset(
    {VCENTER_PASSWORD, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, CODEC_KEY}
)
# Other names are allowed (e.g. per-vCenter passwords) but must look like identifiers, so a
# value pasted into the name slot by mistake is refused instead of stored as a key.
_NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,127}$")

_MASK = "***"
_FILE_MODE = 0o600
_FORMAT_VERSION = 1

# Listeners told about every secret value this process learns (the log redaction filter).
_value_listeners: list[Callable[[str], None]] = []
_known_values: set[str] = set()
_listeners_lock = threading.Lock()


def add_secret_value_listener(listener: Callable[[str], None]) -> None:
    """Call `listener(value)` for every secret value seen so far and from now on."""
    with _listeners_lock:
        _value_listeners.append(listener)
        known = list(_known_values)
    for value in known:
        listener(value)


#: Values shorter than this are not searched for in payloads (too likely to occur by chance).
MIN_GUARDED_LENGTH = 8
_guard_re: re.Pattern[bytes] | None = None


def _rebuild_guard() -> None:
    global _guard_re
    forms: set[bytes] = set()
    for value in _known_values:
        if len(value) < MIN_GUARDED_LENGTH:
            continue
        forms.add(value.encode("utf-8"))
        forms.add(json.dumps(value)[1:-1].encode("utf-8"))  # as it appears inside JSON
    ordered = sorted(forms, key=len, reverse=True)
    _guard_re = re.compile(b"|".join(re.escape(f) for f in ordered)) if ordered else None


def contains_secret_value(data: bytes) -> bool:
    """True when `data` holds a registered secret value (8+ characters) verbatim.

    The payload codec calls this on every plaintext payload, so a credential that slipped into
    a workflow input, result or heartbeat fails loudly instead of being persisted.
    """
    pattern = _guard_re
    return pattern is not None and pattern.search(data) is not None


def register_secret_value(value: str) -> None:
    """Tell the redaction machinery about a value that must never appear in output."""
    if not value:
        return
    with _listeners_lock:
        if value in _known_values:
            return
        _known_values.add(value)
        _rebuild_guard()
        listeners = list(_value_listeners)
    for listener in listeners:
        listener(value)


class Secret:
    """A string that does not print itself.

    `str()`, `repr()`, `format()` and f-strings all give "***"; `.reveal()` is the one,
    greppable way to get the value (at the point where a library needs it). Equality compares
    values in constant time so a Secret can be compared without revealing it.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value
        register_secret_value(value)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return _MASK

    def __repr__(self) -> str:
        return "Secret('***')"

    def __format__(self, format_spec: str) -> str:
        return _MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        import hmac

        if isinstance(other, Secret):
            return hmac.compare_digest(self._value.encode(), other._value.encode())
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __reduce__(self) -> Any:
        # Pickling (e.g. into a process pool) would be an easy way to smuggle the value into a
        # payload; refuse it so the mistake shows up in tests rather than in a history.
        raise TypeError("Secret values must not be serialized; pass the secret name instead")


class SecretStoreError(RuntimeError):
    """A store problem with a message that tells the operator what to do."""


class SecretStore:
    """Named secrets in one JSON file with mode 0600.

    File layout: {"version": 1, "secrets": {"<name>": "<value>", ...}}.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    # -- reading ---------------------------------------------------------------------------

    def _check_mode(self, st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise SecretStoreError(f"Secret store {self.path} is not a regular file.")
        loose = stat.S_IMODE(st.st_mode) & 0o077
        if loose:
            raise SecretStoreError(
                f"Secret store {self.path} is readable or writable by group/others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); refusing to use it. "
                f"Fix it with: chmod 600 {self.path}"
            )

    def _load(self) -> dict[str, str]:
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise SecretStoreError(f"Cannot open secret store {self.path}: {exc}") from None
        with os.fdopen(fd, "r", encoding="utf-8") as handle:
            self._check_mode(os.fstat(handle.fileno()))
            text = handle.read()
        if not text.strip():
            return {}
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            # Never echo the content: it is secret.
            raise SecretStoreError(
                f"Secret store {self.path} is not valid JSON (line {exc.lineno}); "
                "restore it or re-enter the credentials."
            ) from None
        secrets = document.get("secrets") if isinstance(document, dict) else None
        if not isinstance(secrets, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in secrets.items()
        ):
            raise SecretStoreError(f"Secret store {self.path} has an unexpected layout.")
        for value in secrets.values():
            register_secret_value(value)
        return dict(secrets)

    def get(self, name: str) -> Secret | None:
        """The secret called `name`, or None when it was never set."""
        _check_name(name)
        with self._lock:
            value = self._load().get(name)
        return None if value is None else Secret(value)

    def require(self, name: str) -> Secret:
        """Like `get`, but a missing secret is an error naming the command that sets it."""
        secret = self.get(name)
        if secret is None:
            raise SecretStoreError(
                f"Secret {name!r} is not set in {self.path}. "
                "Run `snapship credentials` (or `snapship install`) to set it."
            )
        return secret

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._load())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    # -- writing ---------------------------------------------------------------------------

    def set(self, name: str, value: str | Secret) -> None:
        _check_name(name)
        plain = value.reveal() if isinstance(value, Secret) else value
        if not isinstance(plain, str):
            raise TypeError("secret values are strings")
        register_secret_value(plain)
        with self._lock:
            secrets = self._load()
            secrets[name] = plain
            self._write(secrets)

    def delete(self, name: str) -> bool:
        """Remove `name`; True when it was there."""
        _check_name(name)
        with self._lock:
            secrets = self._load()
            if name not in secrets:
                return False
            del secrets[name]
            self._write(secrets)
            return True

    def _write(self, secrets: dict[str, str]) -> None:
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = json.dumps({"version": _FORMAT_VERSION, "secrets": secrets}, indent=2) + "\n"
        # mkstemp creates the file O_EXCL with mode 0600 regardless of umask; fchmod again in
        # case a platform differs, before a single secret byte is written.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        try:
            os.fchmod(fd, _FILE_MODE)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, self.path)
        except BaseException:
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass
            raise
        _fsync_directory(directory)

    def create_empty(self) -> None:
        """Create the file (mode 0600) if missing, so its permissions can be checked early."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        except FileExistsError:
            with self._lock:
                self._load()
            return
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps({"version": _FORMAT_VERSION, "secrets": {}}) + "\n")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SecretStoreError(
            "Secret names are lower-case identifiers such as "
            f"{', '.join(sorted(KNOWN_SECRET_NAMES))}; got an invalid name."
        )


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
