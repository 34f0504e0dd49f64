"""AES-256-GCM payload codec: round trip, rotation, tamper detection, no key -> no plaintext."""

from __future__ import annotations

import json

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter

from snapship.codec import (
    ENCODING,
    KEY_ID_METADATA,
    CodecError,
    EncryptionCodec,
    KeyRing,
    PayloadDecryptionError,
    SecretInPayloadError,
    UnknownKeyError,
    data_converter,
)
from snapship.secrets import Secret

MARKER = "PLAINTEXT-MARKER-vm-4711"


def plain(text: str = MARKER) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(text).encode())


async def test_round_trip_hides_data_and_original_encoding() -> None:
    codec = EncryptionCodec(KeyRing.generate("k1"))
    originals = [plain(), plain("second"), Payload(metadata={"encoding": b"binary/null"})]
    encoded = await codec.encode(originals)
    assert len(encoded) == 3
    for payload in encoded:
        assert payload.metadata["encoding"] == ENCODING
        assert payload.metadata[KEY_ID_METADATA] == b"k1"
        assert set(payload.metadata) == {"encoding", KEY_ID_METADATA}
        assert b"json/plain" not in payload.data and MARKER.encode() not in payload.data
    # a fresh nonce per payload: the same plaintext never gives the same ciphertext
    again = await codec.encode([plain()])
    assert again[0].data != encoded[0].data
    assert await codec.decode(encoded) == originals


async def test_rotation_encrypts_with_current_and_decrypts_old() -> None:
    old_ring = KeyRing.generate("2025-old")
    old_payload = (await EncryptionCodec(old_ring).encode([plain()]))[0]
    new_ring = old_ring.rotated("2026-new")
    assert new_ring.current == "2026-new" and set(new_ring.keys) == {"2025-old", "2026-new"}
    codec = EncryptionCodec(new_ring)
    new_payload = (await codec.encode([plain()]))[0]
    assert new_payload.metadata[KEY_ID_METADATA] == b"2026-new"
    assert await codec.decode([old_payload, new_payload]) == [plain(), plain()]
    # after retiring the old key, the old payload names a key we no longer hold
    retired = EncryptionCodec(new_ring.without("2025-old"))
    with pytest.raises(UnknownKeyError, match="2025-old"):
        await retired.decode([old_payload])
    with pytest.raises(CodecError):
        new_ring.without("2026-new")


async def test_tampering_is_detected() -> None:
    codec = EncryptionCodec(KeyRing.generate("k1"))
    sealed = (await codec.encode([plain()]))[0]
    for i in (0, 12, len(sealed.data) // 2, len(sealed.data) - 1):  # nonce, body, tag
        flipped = bytearray(sealed.data)
        flipped[i] ^= 0x01
        bad = Payload(metadata=dict(sealed.metadata), data=bytes(flipped))
        with pytest.raises(PayloadDecryptionError):
            await codec.decode([bad])
    truncated = Payload(metadata=dict(sealed.metadata), data=sealed.data[:20])
    with pytest.raises(PayloadDecryptionError):
        await codec.decode([truncated])


async def test_relabelled_key_id_fails_authentication() -> None:
    ring = KeyRing.generate("a").rotated("b")
    codec = EncryptionCodec(ring)
    sealed = (await codec.encode([plain()]))[0]
    relabelled = Payload(metadata={**sealed.metadata, KEY_ID_METADATA: b"a"}, data=sealed.data)
    with pytest.raises(PayloadDecryptionError):
        await codec.decode([relabelled])


async def test_unreadable_without_the_key() -> None:
    sealed = (await EncryptionCodec(KeyRing.generate("k1")).encode([plain()]))[0]
    # A different key under the same id (someone regenerated instead of restoring):
    other = EncryptionCodec(KeyRing.generate("k1"))
    with pytest.raises(PayloadDecryptionError):
        await other.decode([sealed])
    with pytest.raises(UnknownKeyError, match="k1"):
        await EncryptionCodec(KeyRing.generate("k2")).decode([sealed])


async def test_unencrypted_payloads_pass_through_decode() -> None:
    codec = EncryptionCodec(KeyRing.generate())
    assert await codec.decode([plain()]) == [plain()]


def test_keyring_text_round_trip_and_validation() -> None:
    ring = KeyRing.generate("k1").rotated("k2")
    back = KeyRing.from_text(ring.to_text())
    assert back == ring
    assert KeyRing.from_text(ring.to_secret()) == ring
    assert "k1" in repr(ring) and ring.to_text() not in repr(ring)
    for bad in (
        "",
        "{}",
        '{"current": "x", "keys": {}}',
        '{"current": "x", "keys": {"x": "!!"}}',
        '{"current": "x", "keys": {"x": "AAAA"}}',
    ):
        with pytest.raises(CodecError) as info:
            KeyRing.from_text(bad)
        assert "AAAA" not in str(info.value)


async def test_data_converter_uses_the_codec() -> None:
    converter = data_converter(KeyRing.generate("dc"))
    payloads = await converter.encode([{"vm": MARKER}])
    assert payloads[0].metadata["encoding"] == ENCODING
    assert MARKER.encode() not in payloads[0].SerializeToString()
    assert await converter.decode(payloads, [dict]) == [{"vm": MARKER}]


async def test_codec_refuses_payloads_carrying_a_secret_value() -> None:
    password = "Pa55-in-payload-31d7"
    Secret(password)  # the worker learns it from the store
    codec = EncryptionCodec(KeyRing.generate())
    converter = data_converter(codec.keyring)
    for value in ({"vcenter_password": password}, [f"user:{password}"], 'quote"' + password):
        with pytest.raises(SecretInPayloadError) as info:
            await converter.encode([value])
        assert password not in str(info.value)
    # the name of the secret is what workflows carry, and that is fine
    assert len(await converter.encode([{"password_secret": "vcenter_password"}])) == 1
    # opting out is explicit
    lax = EncryptionCodec(codec.keyring, refuse_secrets=False)
    assert len(await lax.encode([plain(password)])) == 1


async def test_secret_objects_cannot_be_serialized_into_payloads() -> None:
    with pytest.raises(TypeError):
        await DataConverter.default.encode([Secret("object-in-payload-5e2a")])
