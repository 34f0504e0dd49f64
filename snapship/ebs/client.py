"""boto3 clients for EBS direct APIs, EC2 and STS, and how we classify their errors.

Clients get short connect/read timeouts and few botocore retries: uploads without read timeouts
hang, and nested retry loops multiply (coldsnap 437). The writer adds a short, call-level retry
for throttling and transient faults; Temporal owns the long retry budget above that.

The endpoint comes from configuration (`--endpoint`); nothing here knows what is behind it.
Credentials are passed in explicitly and never logged or put into reprs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import CredentialProvider, Credentials, RefreshableCredentials
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from snapship import __version__
from snapship.ebs.block_transport import EbsBlockClient
from snapship.telemetry.metrics import observe_ebs_call

log = logging.getLogger(__name__)

DEFAULT_MAX_POOL_CONNECTIONS = 64


@dataclass(frozen=True)
class AwsCredentials:
    """One set of credentials as a provider returns them; secrets are kept out of repr."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    expiry: datetime | None = None
    """When set, botocore refreshes through the provider shortly before this time."""


CredentialsSource = Callable[[], AwsCredentials] | Credentials


@dataclass(frozen=True)
class AwsConnection:
    """Everything needed to build clients; `credentials=None` uses botocore's default chain."""

    region: str
    endpoint_url: str | None = None
    credentials: CredentialsSource | None = field(default=None, repr=False)
    proxy_address: str | None = None
    verify: bool | str = True
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    max_attempts: int = 3
    max_pool_connections: int = DEFAULT_MAX_POOL_CONNECTIONS


class _CallableProvider(CredentialProvider):
    """Feeds botocore from our callable, refreshing when the credentials carry an expiry."""

    METHOD = "snapship-provider"
    CANONICAL_NAME = "snapship-provider"

    def __init__(self, source: Callable[[], AwsCredentials]) -> None:
        super().__init__()
        self._source = source

    def _metadata(self) -> dict[str, Any]:
        creds = self._source()
        assert creds.expiry is not None
        return {
            "access_key": creds.access_key_id,
            "secret_key": creds.secret_access_key,
            "token": creds.session_token,
            "expiry_time": creds.expiry.isoformat(),
        }

    def load(self) -> Credentials:
        creds = self._source()
        if creds.expiry is None:
            return Credentials(
                creds.access_key_id, creds.secret_access_key, creds.session_token, self.METHOD
            )
        return RefreshableCredentials.create_from_metadata(
            metadata=self._metadata(), refresh_using=self._metadata, method=self.METHOD
        )


class _FixedProvider(CredentialProvider):
    METHOD = "snapship-fixed"
    CANONICAL_NAME = "snapship-fixed"

    def __init__(self, creds: Credentials) -> None:
        super().__init__()
        self._creds = creds

    def load(self) -> Credentials:
        return self._creds


def botocore_config(conn: AwsConnection, max_pool_connections: int | None = None) -> Config:
    proxies = None
    if conn.proxy_address:
        proxies = {"http": conn.proxy_address, "https": conn.proxy_address}
    return Config(
        region_name=conn.region,
        connect_timeout=conn.connect_timeout_s,
        read_timeout=conn.read_timeout_s,
        retries={"max_attempts": conn.max_attempts, "mode": "standard"},
        max_pool_connections=max_pool_connections or conn.max_pool_connections,
        proxies=proxies,
        user_agent_extra=f"snapship/{__version__}",
    )


def make_session(conn: AwsConnection) -> boto3.session.Session:
    """A boto3 session whose credentials come only from `conn` (or the default chain)."""
    core = botocore.session.Session()
    if conn.credentials is not None:
        provider: CredentialProvider
        if isinstance(conn.credentials, Credentials):
            provider = _FixedProvider(conn.credentials)
        else:
            provider = _CallableProvider(conn.credentials)
        resolver = core.get_component("credential_provider")
        resolver.insert_before("env", provider)
    return boto3.session.Session(botocore_session=core, region_name=conn.region)


@dataclass
class AwsClients:
    ebs: Any
    ec2: Any
    sts: Any


def make_client(
    conn: AwsConnection,
    service: str,
    session: boto3.session.Session | None = None,
    max_pool_connections: int | None = None,
) -> Any:
    """One client for "ebs", "ec2" or "sts"; size the pool to the writer's concurrency."""
    session = session or make_session(conn)
    client = session.client(
        service,  # type: ignore[call-overload]
        endpoint_url=conn.endpoint_url or None,
        verify=conn.verify,
        config=botocore_config(conn, max_pool_connections),
    )
    instrument(client)
    return client


# ---------------------------------------------------------------- metrics and spans per call

_OBSERVATION = "snapship_observation"


def _before_call(model: Any, context: dict[str, Any], **_: Any) -> None:
    observation = observe_ebs_call(model.name)
    observation.__enter__()
    context[_OBSERVATION] = observation


def _after_call(
    http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
) -> None:
    observation = context.pop(_OBSERVATION, None)
    if observation is None:
        return
    if http_response.status_code >= 300:
        error = ClientError(parsed, model.name)  # type: ignore[arg-type]
        observation.__exit__(ClientError, error, None)
    else:
        observation.__exit__(None, None, None)


def _after_call_error(exception: Exception, context: dict[str, Any], **_: Any) -> None:
    observation = context.pop(_OBSERVATION, None)
    if observation is not None:
        observation.__exit__(type(exception), exception, exception.__traceback__)


def instrument(client: Any) -> None:
    """Time every AWS call, count its errors by code and give it a span, in one place (botocore's
    call events), so no call site can forget to."""
    client.meta.events.register("before-call", _before_call)
    client.meta.events.register("after-call", _after_call)
    client.meta.events.register("after-call-error", _after_call_error)


def block_client(
    conn: AwsConnection, session: boto3.session.Session, ebs: Any, pool: int
) -> Any:
    """The EBS client with the cheap PutSnapshotBlock (see block_transport); without resolvable
    credentials, boto3's own client, so the call fails the way boto3 users know."""
    credentials = session.get_credentials()
    if credentials is None:
        return ebs
    proxies: dict[str, str] | None = botocore_config(conn).proxies  # type: ignore[attr-defined]
    return EbsBlockClient(
        ebs,
        credentials,
        verify=conn.verify,
        proxies=proxies,
        connect_timeout_s=conn.connect_timeout_s,
        read_timeout_s=conn.read_timeout_s,
        max_pool_connections=pool,
        max_attempts=conn.max_attempts,
    )


def make_clients(conn: AwsConnection, ebs_concurrency: int | None = None) -> AwsClients:
    """EBS (pool sized to `ebs_concurrency` + headroom), EC2 and STS sharing one session."""
    session = make_session(conn)
    pool = max(conn.max_pool_connections, (ebs_concurrency or 0) + 4)
    return AwsClients(
        ebs=block_client(conn, session, make_client(conn, "ebs", session, pool), pool),
        ec2=make_client(conn, "ec2", session, 10),
        sts=make_client(conn, "sts", session, 2),
    )


# ---------------------------------------------------------------- error classification

THROTTLING_CODES = frozenset(
    {
        "RequestThrottledException",
        "ConcurrentLimitExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "SlowDown",
    }
)
TRANSIENT_CODES = frozenset(
    {"InternalServerException", "InternalError", "ServiceUnavailable", "InternalFailure"}
)
NOT_FOUND_CODES = frozenset({"ResourceNotFoundException"})
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    BotoConnectionError,
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def error_reason(exc: BaseException) -> str:
    """EBS puts a machine-readable `Reason` (e.g. SNAPSHOT_NOT_FOUND) next to the code."""
    if isinstance(exc, ClientError):
        reason = exc.response.get("Reason") or exc.response.get("Error", {}).get("Reason")
        return str(reason or "")
    return ""


def http_status(exc: BaseException) -> int:
    if isinstance(exc, ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return 0


def is_transient(exc: BaseException) -> bool:
    """Throttling, 5xx and connection trouble: worth a short retry at the call level."""
    if isinstance(exc, TRANSPORT_ERRORS):
        return True
    if not isinstance(exc, ClientError):
        return False
    code = error_code(exc)
    return code in THROTTLING_CODES or code in TRANSIENT_CODES or http_status(exc) >= 500


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and error_code(exc) in NOT_FOUND_CODES


class EbsCallError(Exception):
    """An EBS/EC2 call failed for good. `retryable` tells Temporal whether a new attempt helps."""

    def __init__(
        self, operation: str, code: str, message: str, reason: str = "", retryable: bool = False
    ) -> None:
        detail = f"{operation} failed: {code or 'error'}"
        if reason:
            detail += f" ({reason})"
        if message:
            detail += f": {message}"
        super().__init__(detail)
        self.operation = operation
        self.code = code
        self.reason = reason
        self.retryable = retryable
        self.checkpoint: Any = None
        """Where an interrupted upload stood (a writer `Checkpoint`), when there was one."""

    @classmethod
    def from_exception(cls, operation: str, exc: BaseException) -> EbsCallError:
        if isinstance(exc, ClientError):
            message = str(exc.response.get("Error", {}).get("Message", ""))
            return cls(operation, error_code(exc), message, error_reason(exc), is_transient(exc))
        return cls(operation, type(exc).__name__, str(exc), "", is_transient(exc))
