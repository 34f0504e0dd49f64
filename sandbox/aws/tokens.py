"""Opaque, tamper-evident block tokens and page tokens with expiry.

AWS block tokens name one stored block and expire after 7 days; page tokens (NextToken) expire
after 60 minutes. Here a token is ``base64(expiry || HMAC(secret, subject || expiry))``: the
server keeps no token table, a forged or stale token is detected on use.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct

BLOCK_TOKEN_TTL = 7 * 24 * 3600.0
PAGE_TOKEN_TTL = 3600.0


class TokenSigner:
    """Makes and checks tokens bound to a subject string."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else os.urandom(32)

    def _mac(self, subject: bytes, expiry: int) -> bytes:
        return hmac.new(self._secret, subject + struct.pack(">Q", expiry), hashlib.sha256).digest()

    def block_token(self, subject: bytes, expiry: float) -> str:
        exp = int(expiry)
        return base64.b64encode(struct.pack(">I", exp) + self._mac(subject, exp)[:20]).decode()

    def check_block_token(self, token: str, subject: bytes, now: float) -> bool:
        raw = _decode(token)
        if raw is None or len(raw) != 24:
            return False
        (exp,) = struct.unpack(">I", raw[:4])
        if exp < now:
            return False
        return hmac.compare_digest(raw[4:], self._mac(subject, exp)[:20])

    def page_token(self, subject: bytes, next_index: int, expiry: float) -> str:
        exp = int(expiry)
        head = struct.pack(">QI", next_index, exp)
        mac = self._mac(subject + head, exp)[:16]
        return base64.b64encode(head + mac).decode()

    def check_page_token(self, token: str, subject: bytes, now: float) -> int | None:
        """The block index to resume at, or None when the token is invalid or expired."""
        raw = _decode(token)
        if raw is None or len(raw) != 28:
            return None
        head, mac = raw[:12], raw[12:]
        next_index, exp = struct.unpack(">QI", head)
        if exp < now or not hmac.compare_digest(mac, self._mac(subject + head, exp)[:16]):
            return None
        return int(next_index)


def _decode(token: str) -> bytes | None:
    try:
        return base64.b64decode(token.encode(), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
