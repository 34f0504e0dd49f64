"""Threaded HTTP server for the local AWS endpoint, and its command line.

``python -m sandbox.aws --host 127.0.0.1 --port 4566 --data-dir D`` serves until SIGINT or
SIGTERM and prints ``local-aws endpoint http://HOST:PORT`` once it accepts connections (port 0
picks a free port; the printed line tells which). ``--faults JSON`` sets initial fault settings
(the same keys as ``POST /_sandbox/faults``).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from sandbox.aws import ec2_launch, moto_tags
from sandbox.aws.admin import AdminApi
from sandbox.aws.app import LocalAwsApp
from sandbox.aws.clock import ScaledClock
from sandbox.aws.ebs_api import EbsApi
from sandbox.aws.ec2_mirror import Ec2Mirror
from sandbox.aws.faults import FaultInjector, FaultSettings, settings_from_dict
from sandbox.aws.http_server import WsgiHttpServer
from sandbox.aws.snapshots import EbsDirectBackend
from sandbox.aws.stats import Stats

DEFAULT_REGION = "us-east-1"
SWEEP_INTERVAL = 1.0


class LocalAwsServer:
    """Owns the backend, the WSGI app, the HTTP server thread and the sweeper thread."""

    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        settings: dict[str, Any] | None = None,
        verbose: bool = False,
        prewarm_regions: tuple[str, ...] = (DEFAULT_REGION,),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.faults = FaultInjector(settings_from_dict(FaultSettings(), settings or {}))
        self.clock = ScaledClock(self.faults.settings.clock_speed)
        ec2_launch.install()  # EC2's launch rules moto lacks (images from snapshots, tokens)
        moto_tags.install()  # a resource's tags by lookup, not a scan of all tags
        self.mirror = Ec2Mirror()
        for region in prewarm_regions:  # moto builds a region's EC2 backend (~1 s) on first use
            self.mirror.backend(region)
        self.stats = Stats()
        self.backend = EbsDirectBackend(self.data_dir, self.faults, self.clock, self.mirror)
        self.app = LocalAwsApp(
            EbsApi(self.backend, self.faults, self.stats),
            AdminApi(self.backend, self.faults, self.stats),
            DomainDispatcherApplication(create_backend_app),
            self.stats,
        )
        self._server = WsgiHttpServer(host, port, self.app, verbose=verbose)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        serve = threading.Thread(target=self._server.serve_forever, name="local-aws-http",
                                 daemon=True)
        sweep = threading.Thread(target=self._sweep_loop, name="local-aws-sweep", daemon=True)
        self._threads = [serve, sweep]
        for t in self._threads:
            t.start()

    def _sweep_loop(self) -> None:
        while not self._stop.wait(SWEEP_INTERVAL):
            try:
                self.backend.sweep()
            except Exception as exc:  # keep sweeping; report rather than die silently
                print(f"local-aws: sweep failed: {exc!r}", file=sys.stderr)

    def serve_forever(self) -> None:
        self.start()
        self._stop.wait()

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        for t in self._threads:
            t.join(timeout=5)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sandbox.aws",
        description="Local AWS endpoint: EBS direct APIs with AWS's semantics, EC2 from moto.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4566, help="0 picks a free port")
    p.add_argument("--data-dir", type=Path, default=Path(".data/local-aws"),
                   help="where block files are kept (default: .data/local-aws)")
    p.add_argument("--complete-delay", type=float, default=0.5,
                   help="seconds a completed snapshot stays pending while sealing")
    p.add_argument("--pending-quota", type=int, default=100)
    p.add_argument("--faults", default="{}",
                   help='initial fault settings as JSON, e.g. \'{"throttle_fraction": 0.1}\'')
    p.add_argument("--verbose", action="store_true", help="log every request")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        extra = json.loads(args.faults)
        if not isinstance(extra, dict):
            raise ValueError("--faults must be a JSON object")
        settings = {
            "complete_delay_seconds": args.complete_delay,
            "pending_quota": args.pending_quota,
            **extra,
        }
        server = LocalAwsServer(
            args.data_dir, host=args.host, port=args.port, settings=settings,
            verbose=args.verbose,
        )
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))

    def _stop(signum: int, frame: FrameType | None) -> None:
        server._stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server.start()
    print(f"local-aws endpoint {server.endpoint_url}", flush=True)
    try:
        server._stop.wait()
    finally:
        server.stop()
    return 0
