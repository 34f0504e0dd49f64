"""In-process local AWS for tests, benchmarks and the demo: ``start_local_aws(data_dir)``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.aws.admin_client import AdminClient
from sandbox.aws.server import DEFAULT_REGION, LocalAwsServer

FAKE_ACCESS_KEY_ID = "AKIALOCALSANDBOX0001"
FAKE_SECRET_ACCESS_KEY = "local-sandbox-secret-not-a-real-key"


@dataclass
class LocalAwsHandle:
    """A running local AWS: where to reach it, fake credentials, admin client, stop()."""

    endpoint_url: str
    region: str
    access_key_id: str
    secret_access_key: str
    admin: AdminClient
    data_dir: Path
    server: LocalAwsServer = field(repr=False)

    def client(self, service: str, max_attempts: int | None = None, **config: Any) -> Any:
        """A boto3 client for ``service`` aimed at this endpoint (``max_attempts=1``: no
        botocore retries, to observe injected errors)."""
        import boto3
        from botocore.config import Config

        cfg: dict[str, Any] = {"max_pool_connections": 32, **config}
        if max_attempts is not None:
            cfg["retries"] = {"total_max_attempts": max_attempts, "mode": "standard"}
        make: Any = boto3.client
        return make(
            service,
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(**cfg),
        )

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> LocalAwsHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_local_aws(
    data_dir: Path, port: int = 0, settings: dict[str, Any] | None = None
) -> LocalAwsHandle:
    """Start the endpoint on 127.0.0.1 in background threads of this process.

    ``settings`` are initial fault settings (see :class:`sandbox.aws.faults.FaultSettings`),
    e.g. ``{"complete_delay_seconds": 0.05}``. moto's backends are process-wide, so two
    handles in one process share EC2 state (each keeps its own EBS block store).
    """
    server = LocalAwsServer(Path(data_dir), port=port, settings=settings)
    server.start()
    return LocalAwsHandle(
        endpoint_url=server.endpoint_url,
        region=DEFAULT_REGION,
        access_key_id=FAKE_ACCESS_KEY_ID,
        secret_access_key=FAKE_SECRET_ACCESS_KEY,
        admin=AdminClient(server.endpoint_url),
        data_dir=Path(data_dir),
        server=server,
    )
