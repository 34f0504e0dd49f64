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

from temporalio.exceptions import ApplicationError

from snapship.config import ClientConfig, VcenterSettings
from snapship.ebs.client import AwsClients, AwsConnection, AwsCredentials, make_clients
from snapship.secrets import SecretStore
from snapship.telemetry.metrics import METRICS, SnapshipMetrics
from snapship.vcenters import UnknownVcenter, find_vcenter, password_secret
from snapship.vddk.config_file import VddkSettings
from snapship.vddk.process import VddkLibrary
from snapship.vddk.thumbprint import server_thumbprint
from snapship.vsphere.session import VcenterSession


class VcenterNotConfigured(ApplicationError):
    """An activity names a vCenter this client no longer has (one line, never retried)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, type="VcenterNotConfigured", non_retryable=True)


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
        self._sessions: dict[tuple[str, int], VcenterSession] = {}
        self._session_keys: dict[tuple[str, int], tuple[str, int, str, str, float]] = {}
        self._aws: AwsClients | None = None
        self._aws_key: float | None = None
        self._thumbprints: dict[tuple[str, int], str] = {}
        self._config_version: tuple[int, int] | None = None
        self._vddk: VddkLibrary | None = None

    def _secrets_mtime(self) -> float:
        try:
            return Path(self.config.secrets_path).stat().st_mtime
        except FileNotFoundError:
            return 0.0

    # ------------------------------------------------------------------ vCenter

    def _new_session(self, vc: VcenterSettings) -> VcenterSession:
        return VcenterSession(
            vc.host,
            vc.user,
            self.secrets.require(password_secret(self.config, vc)),
            port=vc.port,
            ca_path=vc.ca_path or None,
            disable_ssl_cert_validation=vc.disable_ssl_cert_validation,
        ).connect()

    def _refresh_vcenter_settings(self) -> None:
        """Pick up `vcenter_configuration_update` and `snapship vcenter add|remove`: they
        rewrite config.json (and the secret store); the next session uses what they wrote."""
        try:
            st = Path(self.config.path).stat()
        except FileNotFoundError:
            return
        # The inode as well: config.save() replaces the file, maybe within one mtime tick.
        version = (st.st_ino, st.st_mtime_ns)
        if version != self._config_version:
            self._config_version = version
            fresh = ClientConfig.load(Path(self.config.data_dir))
            self.config.vcenter = fresh.vcenter
            self.config.vcenters = fresh.vcenters

    def vcenter_settings(self, vcenter_id: str = "") -> VcenterSettings:
        """The settings of the vCenter an activity input names ("" = the first one).

        An unknown vCenter (removed from the client while its VMs still had runs queued) is a
        permanent fault: retrying cannot bring it back.
        """
        with self._lock:
            self._refresh_vcenter_settings()
            try:
                return find_vcenter(self.config, vcenter_id)
            except UnknownVcenter as err:
                raise VcenterNotConfigured(str(err)) from None

    @contextmanager
    def vcenter(self, vcenter_id: str = "") -> Iterator[VcenterSession]:
        """The worker's shared session with that vCenter (re-logins itself on expiry)."""
        vc = self.vcenter_settings(vcenter_id)
        secret = password_secret(self.config, vc)
        slot = (vc.host, vc.port)
        key = (vc.host, vc.port, vc.user, secret, self._secrets_mtime())
        with self._lock:
            session = self._sessions.get(slot)
            if session is None or self._session_keys.get(slot) != key:
                old = session
                session = self._new_session(vc)
                self._sessions[slot] = session
                self._session_keys[slot] = key
                if old is not None:
                    try:
                        old.close()
                    except Exception:
                        pass
        yield session

    def vcenter_thumbprint(self, vcenter_id: str = "") -> str:
        """SHA-1 thumbprint VDDK pins, taken from the verified TLS handshake."""
        vc = self.vcenter_settings(vcenter_id)
        with self._lock:
            slot = (vc.host, vc.port)
            if slot not in self._thumbprints:
                self._thumbprints[slot] = server_thumbprint(
                    vc.host,
                    vc.port,
                    ca_path=vc.ca_path or None,
                    verify=not vc.disable_ssl_cert_validation,
                )
            return self._thumbprints[slot]

    def vcenter_password(self, vcenter_id: str = "") -> str:
        vc = self.vcenter_settings(vcenter_id)
        return self.secrets.require(password_secret(self.config, vc)).reveal()

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

    def vddk(self) -> VddkLibrary:
        """How to start VDDK reader processes (the worker itself never loads the library)."""
        with self._lock:
            if self._vddk is None:
                rep = self.config.replication
                self._vddk = VddkLibrary(
                    lib_path=Path(self.config.vddk_lib_path),
                    work_dir=Path(self.config.data_dir) / "vddk-work",
                    settings=VddkSettings(
                        read_timeout_ms=rep.vddk_nfc_read_timeout_ms,
                        log_level=rep.vddk_log_level,
                    ),
                    reads_in_flight=rep.vddk_reads_in_flight,
                )
            return self._vddk
