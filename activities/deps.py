"""What the worker's activities share: configuration, secrets and long-lived connections.

Credentials are read from the secret store when a connection is (re)built, never passed through
Temporal. A credential change saved by `vcenter_configuration_update` is picked up by the next
connection: the store's modification time is part of the cache key.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from snapship.config import ClientConfig
from snapship.ebs.client import AwsClients, AwsConnection, AwsCredentials, make_clients
from snapship.secrets import SecretStore
from snapship.telemetry.metrics import METRICS, SnapshipMetrics
from snapship.vddk.binding import VixDiskLib
from snapship.vddk.thumbprint import server_thumbprint
from snapship.vsphere.session import VcenterSession


class WorkerDeps:
    def __init__(
        self,
        config: ClientConfig,
        secrets: SecretStore | None = None,
        metrics: SnapshipMetrics | None = None,
    ) -> None:
        self.config = config
        self.secrets = secrets or SecretStore(config.secrets_path)
        self.metrics = metrics or METRICS
        self._lock = threading.Lock()
        self._session: VcenterSession | None = None
        self._session_key: tuple[str, int, str, float] | None = None
        self._aws: AwsClients | None = None
        self._aws_key: float | None = None
        self._thumbprint: str | None = None
        self._config_mtime: float | None = None

    def _secrets_mtime(self) -> float:
        try:
            return Path(self.config.secrets_path).stat().st_mtime
        except FileNotFoundError:
            return 0.0

    # ------------------------------------------------------------------ vCenter

    def _new_session(self) -> VcenterSession:
        vc = self.config.vcenter
        return VcenterSession(
            vc.host,
            vc.user,
            self.secrets.require("vcenter_password"),
            port=vc.port,
            ca_path=vc.ca_path or None,
            disable_ssl_cert_validation=vc.disable_ssl_cert_validation,
        ).connect()

    def _refresh_vcenter_settings(self) -> None:
        """Pick up `vcenter_configuration_update`: it rewrites the user in config.json and the
        password in the secret store; the next session uses both."""
        try:
            mtime = Path(self.config.path).stat().st_mtime
        except FileNotFoundError:
            return
        if mtime != self._config_mtime:
            self._config_mtime = mtime
            self.config.vcenter = ClientConfig.load(Path(self.config.data_dir)).vcenter

    @contextmanager
    def vcenter(self) -> Iterator[VcenterSession]:
        """The worker's shared vCenter session (re-logins itself on expiry)."""
        with self._lock:
            self._refresh_vcenter_settings()
        vc = self.config.vcenter
        key = (vc.host, vc.port, vc.user, self._secrets_mtime())
        with self._lock:
            if self._session is None or self._session_key != key:
                old = self._session
                self._session = self._new_session()
                self._session_key = key
                if old is not None:
                    try:
                        old.close()
                    except Exception:
                        pass
            session = self._session
        yield session

    def vcenter_thumbprint(self) -> str:
        """SHA-1 thumbprint VDDK pins, taken from the verified TLS handshake."""
        with self._lock:
            if self._thumbprint is None:
                vc = self.config.vcenter
                self._thumbprint = server_thumbprint(
                    vc.host,
                    vc.port,
                    ca_path=vc.ca_path or None,
                    verify=not vc.disable_ssl_cert_validation,
                )
            return self._thumbprint

    def vcenter_password(self) -> str:
        return self.secrets.require("vcenter_password").reveal()

    # ------------------------------------------------------------------ AWS and VDDK

    def _credentials(self) -> AwsCredentials:
        return AwsCredentials(
            access_key_id=self.secrets.require("aws_access_key_id").reveal(),
            secret_access_key=self.secrets.require("aws_secret_access_key").reveal(),
        )

    def aws(self) -> AwsClients:
        mtime = self._secrets_mtime()
        with self._lock:
            if self._aws is None or self._aws_key != mtime:
                aws = self.config.aws
                self._aws = make_clients(
                    AwsConnection(
                        region=aws.region,
                        endpoint_url=aws.endpoint_url or None,
                        credentials=self._credentials,
                        proxy_address=aws.proxy_address or None,
                    ),
                    ebs_concurrency=self.config.replication.ebs_concurrency,
                )
                self._aws_key = mtime
            return self._aws

    def vddk(self) -> VixDiskLib:
        return VixDiskLib.load(Path(self.config.vddk_lib_path))
