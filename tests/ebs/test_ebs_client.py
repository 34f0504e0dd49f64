"""Client factory settings and error classification (snapship.ebs.client)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.credentials import Credentials
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from snapship.ebs.client import (
    AwsConnection,
    AwsCredentials,
    EbsCallError,
    botocore_config,
    is_not_found,
    is_transient,
    make_clients,
    make_session,
)


def err(code: str, status: int = 400) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "Op")


def test_config_has_timeouts_few_retries_pool_and_proxy() -> None:
    conn = AwsConnection(
        region="eu-west-1",
        connect_timeout_s=3,
        read_timeout_s=30,
        max_attempts=2,
        proxy_address="http://proxy.internal:3128/",
    )
    cfg: Any = botocore_config(conn, max_pool_connections=70)
    assert (cfg.connect_timeout, cfg.read_timeout) == (3, 30)
    assert cfg.retries == {"max_attempts": 2, "mode": "standard"}
    assert cfg.max_pool_connections == 70
    assert cfg.proxies == {
        "http": "http://proxy.internal:3128/",
        "https": "http://proxy.internal:3128/",
    }
    assert cfg.region_name == "eu-west-1"


def test_clients_use_endpoint_and_pool_sized_to_concurrency() -> None:
    conn = AwsConnection(
        region="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        credentials=lambda: AwsCredentials("AKID", "s3cr3t"),
    )
    clients = make_clients(conn, ebs_concurrency=100)
    assert clients.ebs.meta.endpoint_url == "http://127.0.0.1:9"
    assert clients.ec2.meta.region_name == "us-east-1"
    assert clients.ebs.meta.config.max_pool_connections >= 100
    assert clients.sts.meta.service_model.service_name == "sts"


def test_credentials_come_from_the_provider_and_stay_out_of_reprs() -> None:
    calls = {"n": 0}

    def provider() -> AwsCredentials:
        calls["n"] += 1
        return AwsCredentials(
            "AKIDFIRST", "very-secret", "tok", datetime.now(UTC) + timedelta(hours=1)
        )

    conn = AwsConnection(region="us-east-1", credentials=provider)
    creds = make_session(conn).get_credentials()
    assert creds is not None
    frozen = creds.get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key, frozen.token) == (
        "AKIDFIRST",
        "very-secret",
        "tok",
    )
    assert calls["n"] >= 1
    assert "very-secret" not in repr(conn)
    assert "very-secret" not in repr(provider())

    fixed = AwsConnection(region="us-east-1", credentials=Credentials("AKIDFIX", "sec"))
    fixed_creds = make_session(fixed).get_credentials()
    assert fixed_creds is not None and fixed_creds.access_key == "AKIDFIX"


def test_error_classification() -> None:
    assert is_transient(err("RequestThrottledException"))
    assert is_transient(err("ConcurrentLimitExceededException"))
    assert is_transient(err("InternalServerException", 500))
    assert is_transient(err("Whatever", 503))
    assert is_transient(EndpointConnectionError(endpoint_url="http://x"))
    assert is_transient(ReadTimeoutError(endpoint_url="http://x"))
    assert not is_transient(err("ValidationException"))
    assert not is_transient(err("AccessDeniedException", 403))
    assert is_not_found(err("ResourceNotFoundException", 404))
    e = EbsCallError.from_exception("PutSnapshotBlock", err("AccessDeniedException", 403))
    assert not e.retryable and e.code == "AccessDeniedException"
    assert str(e) == "PutSnapshotBlock failed: AccessDeniedException: m"
    assert EbsCallError.from_exception("X", err("RequestThrottledException")).retryable
