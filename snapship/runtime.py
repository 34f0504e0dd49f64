"""How every snapship process connects to Temporal: encrypted payloads and tracing, always.

One function so the console, the worker and the demo can never disagree on the data converter:
a client without the codec would write plaintext histories or fail to read encrypted ones.
"""

from __future__ import annotations

from temporalio.client import Client, HeaderCodecBehavior
from temporalio.runtime import Runtime

from snapship.codec import KeyRing, data_converter
from snapship.config import ClientConfig, ConfigError
from snapship.secrets import CODEC_KEY, SecretStore
from snapship.telemetry.tracing import configure_tracing, temporal_tracing_interceptor


def load_keyring(config: ClientConfig, secrets: SecretStore | None = None) -> KeyRing:
    store = secrets or SecretStore(config.secrets_path)
    text = store.get(CODEC_KEY)
    if text is None:
        raise ConfigError(
            f"No payload encryption key in {config.secrets_path}. Run `snapship install` "
            "again (it creates one), or restore the secret store from backup."
        )
    return KeyRing.from_text(text)


async def connect_client(
    config: ClientConfig,
    *,
    runtime: Runtime | None = None,
    secrets: SecretStore | None = None,
) -> Client:
    configure_tracing()
    return await Client.connect(
        config.temporal.address,
        namespace=config.temporal.namespace,
        data_converter=data_converter(load_keyring(config, secrets)),
        interceptors=[temporal_tracing_interceptor()],
        # Trace context travels in headers: encrypt those too.
        header_codec_behavior=HeaderCodecBehavior.CODEC,
        runtime=runtime,
    )
