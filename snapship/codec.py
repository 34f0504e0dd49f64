"""Payload encryption for everything snapship stores in Temporal.

Why: workflow inputs, results, heartbeats and signals are persisted in the Temporal database
and shown in the Web UI. They hold VM names, disk layouts, snapshot ids — not credentials (those
never leave the worker's `SecretStore`), but still nothing an operator of a shared Temporal
cluster should read. AES-256-GCM gives confidentiality and tamper detection in one step.

Rotation: a `KeyRing` holds several keys by id; new payloads are sealed with the current key,
old ones open with whichever key their `encryption-key-id` metadata names. Retire an old key only
once no open workflow history still references it.

Wire format of an encrypted payload:
  metadata["encoding"]          = b"binary/encrypted"
  metadata["encryption-key-id"] = key id (ASCII)
  data                          = 12-byte nonce || AES-GCM(ciphertext || 16-byte tag)
The plaintext is the whole original Payload protobuf (its metadata included, so the original
encoding is hidden too); the key id is the associated data, so a payload relabelled with another
key id fails authentication.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
import secrets as _random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import temporalio.converter
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure

from snapship.secrets import Secret, contains_secret_value, register_secret_value

# Bound at import (outside any workflow sandbox): workflow failures are converted inside the
# sandbox, where importing would give a fresh redactor that knows no secret values.
from snapship.telemetry.logs import redact

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEY_BYTES = 32
NONCE_BYTES = 12


class CodecError(ValueError):
    """A payload that cannot be decrypted, with a reason an operator can act on."""


class SecretInPayloadError(CodecError):
    """A payload about to be stored contains the value of a registered secret."""


class UnknownKeyError(CodecError):
    """The payload names a key id this key ring does not hold."""


class PayloadDecryptionError(CodecError):
    """The payload failed authentication: wrong key material or tampered data."""


def generate_key_id() -> str:
    """A readable, unique key id: creation date plus 32 random bits."""
    return f"{time.strftime('%Y%m%d', time.gmtime())}-{_random.token_hex(4)}"


def generate_key() -> bytes:
    """A fresh 256-bit AES key from the OS CSPRNG."""
    return os.urandom(KEY_BYTES)


@dataclass(frozen=True)
class KeyRing:
    """Encryption keys by id, one of them current.

    Text form (what is kept under the `codec_key` secret):
      {"current": "<id>", "keys": {"<id>": "<base64 32-byte key>", ...}}
    """

    current: str
    keys: Mapping[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise CodecError(f"Current key id {self.current!r} is not in the key ring")
        for key_id, key in self.keys.items():
            if not key_id or not key_id.isascii() or any(c.isspace() for c in key_id):
                raise CodecError(f"Invalid key id {key_id!r}: use printable ASCII, no spaces")
            if len(key) != KEY_BYTES:
                raise CodecError(f"Key {key_id!r} has {len(key)} bytes; AES-256 needs 32")

    def __repr__(self) -> str:
        return f"KeyRing(current={self.current!r}, key_ids={sorted(self.keys)!r})"

    @classmethod
    def generate(cls, key_id: str | None = None) -> KeyRing:
        kid = key_id or generate_key_id()
        return cls(current=kid, keys={kid: generate_key()})

    def rotated(self, key_id: str | None = None) -> KeyRing:
        """A new ring whose current key is fresh; all existing keys still decrypt."""
        kid = key_id or generate_key_id()
        if kid in self.keys:
            raise CodecError(f"Key id {kid!r} already exists in the key ring")
        return KeyRing(current=kid, keys={**self.keys, kid: generate_key()})

    def without(self, key_id: str) -> KeyRing:
        """Retire `key_id` (never the current one)."""
        if key_id == self.current:
            raise CodecError("Cannot retire the current key; rotate first")
        return KeyRing(
            current=self.current, keys={k: v for k, v in self.keys.items() if k != key_id}
        )

    def to_text(self) -> str:
        return json.dumps(
            {
                "current": self.current,
                "keys": {k: base64.b64encode(v).decode("ascii") for k, v in self.keys.items()},
            },
            sort_keys=True,
        )

    def to_secret(self) -> Secret:
        return Secret(self.to_text())

    @classmethod
    def from_text(cls, text: str | Secret) -> KeyRing:
        plain = text.reveal() if isinstance(text, Secret) else text
        try:
            document = json.loads(plain)
            current = document["current"]
            raw_keys = document["keys"]
            keys = {
                str(k): base64.b64decode(v.encode("ascii"), validate=True)
                for k, v in raw_keys.items()
            }
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            # Never include the text: it is key material.
            raise CodecError(
                'Codec key ring is malformed; expected {"current": id, "keys": {id: base64}}'
            ) from None
        for key in raw_keys.values():
            register_secret_value(str(key))
        return cls(current=str(current), keys=keys)


class EncryptionCodec(temporalio.converter.PayloadCodec):
    """AES-256-GCM payload codec with key rotation (see module docstring for the format)."""

    def __init__(self, keyring: KeyRing, refuse_secrets: bool = True) -> None:
        """`refuse_secrets`: fail encoding of any payload that contains a registered secret
        value (see `snapship.secrets.contains_secret_value`), because workflows must carry only
        secret names; encryption is not a licence to store credentials in the history."""
        self._keyring = keyring
        self._refuse_secrets = refuse_secrets
        self._ciphers = {kid: AESGCM(key) for kid, key in keyring.keys.items()}

    @property
    def keyring(self) -> KeyRing:
        return self._keyring

    # Temporal's interface is async; the work is CPU-only, so the sync forms serve the
    # threaded codec server without an event loop.
    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self.encode_sync(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self.decode_sync(payloads)

    def encode_sync(self, payloads: Iterable[Payload]) -> list[Payload]:
        kid = self._keyring.current
        cipher = self._ciphers[kid]
        aad = kid.encode("ascii")
        out = []
        for payload in payloads:
            plain = payload.SerializeToString()
            if self._refuse_secrets and contains_secret_value(plain):
                raise SecretInPayloadError(
                    "Refusing to store a Temporal payload that contains a credential value; "
                    "pass the secret's name (snapship.secrets) and resolve it in the activity"
                )
            nonce = os.urandom(NONCE_BYTES)
            sealed = cipher.encrypt(nonce, plain, aad)
            out.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID_METADATA: aad},
                    data=nonce + sealed,
                )
            )
        return out

    def decode_sync(self, payloads: Iterable[Payload]) -> list[Payload]:
        out = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                # Written before encryption was enabled (or by a peer without it): pass through
                # so old histories stay readable.
                out.append(payload)
                continue
            out.append(self._open(payload))
        return out

    def _open(self, payload: Payload) -> Payload:
        raw_kid = payload.metadata.get(KEY_ID_METADATA)
        if raw_kid is None:
            raise CodecError(f"Encrypted payload has no {KEY_ID_METADATA!r} metadata")
        kid = raw_kid.decode("ascii", errors="replace")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise UnknownKeyError(
                f"Payload was encrypted with key id {kid!r}, which this key ring does not hold "
                f"(known ids: {', '.join(sorted(self._ciphers))}). Add the retired key back to "
                "the codec key ring to read it."
            )
        data = payload.data
        if len(data) < NONCE_BYTES + 16:
            raise PayloadDecryptionError("Encrypted payload is truncated")
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], raw_kid)
        except InvalidTag:
            raise PayloadDecryptionError(
                f"Encrypted payload failed authentication with key {kid!r}: it was modified or "
                "the key material for this id is wrong"
            ) from None
        result = Payload()
        result.ParseFromString(plain)
        return result


class RedactingFailureConverter(temporalio.converter.DefaultFailureConverter):
    """Failure messages and stack traces: secrets masked, then moved into an encrypted payload.

    Why: Temporal stores an exception's message and stack trace in the history *outside* the
    payloads, so without this an error text from vCenter or AWS would sit there in clear.
    Like Temporal's `DefaultFailureConverterWithEncodedAttributes` the text goes into
    `encoded_attributes` (which the codec encrypts; the UI decodes it through the codec
    server), and before that any registered secret value or credential pattern is replaced by
    "***" — masked rather than refused, because failing to report a failure would hide it.
    """

    def __init__(self) -> None:
        super().__init__(encode_common_attributes=False)

    def to_failure(
        self,
        exception: BaseException,
        payload_converter: temporalio.converter.PayloadConverter,
        failure: Failure,
    ) -> None:
        # Causes are converted through this method too (recursively), so each level is
        # redacted and encoded once.
        super().to_failure(exception, payload_converter, failure)
        failure.encoded_attributes.CopyFrom(
            payload_converter.to_payloads(
                [{"message": redact(failure.message), "stack_trace": redact(failure.stack_trace)}]
            )[0]
        )
        failure.message = "Encoded failure"
        failure.stack_trace = ""


def data_converter(keyring: KeyRing) -> temporalio.converter.DataConverter:
    """Temporal's default converter plus this codec and `RedactingFailureConverter`.

    Pass to `Client.connect(data_converter=...)`; workers built on that client use it too.
    """
    return dataclasses.replace(
        temporalio.converter.DataConverter.default,
        payload_codec=EncryptionCodec(keyring),
        failure_converter_class=RedactingFailureConverter,
    )
