"""Discovery at scale: a 10,000-VM vCenter read, classified and (optionally) upserted.

Prints the inventory read's duration and PropertyCollector round trips, the classification
time, and with `--upsert` the full DiscoveryWorkflow on the embedded Temporal server (one
signal-with-start per VM, in batches). Figures, not a pass/fail test.

    .venv/bin/python bench/bench_discovery_workflow.py [--vms 10000] [--upsert 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox.vcsim.scenario import DEFAULT_ADMIN, generate_scenario  # noqa: E402
from sandbox.vcsim.testing import start_simulator  # noqa: E402
from snapship.config import ClientConfig  # noqa: E402
from snapship.discovery import scan_vcenter  # noqa: E402
from snapship.vsphere.session import VcenterSession  # noqa: E402

PASSWORD = "bench-password"


class Deps:
    def __init__(self, cfg: ClientConfig) -> None:
        self.config = cfg

    @contextmanager
    def vcenter(self) -> Iterator[VcenterSession]:
        v = self.config.vcenter
        with VcenterSession(v.host, v.user, PASSWORD, port=v.port, ca_path=v.ca_path) as s:
            yield s


async def upsert_bench(cfg: ClientConfig, vms_limit: int) -> None:
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from activities.discovery import DiscoveryActivities
    from snapship.cli.discover import run_discovery
    from snapship.search_attributes import dev_server_flags
    from workflows.discovery import DiscoveryWorkflow
    from workflows.source_server import SourceServerWorkflow

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sys.executable).with_name("temporal")),
        dev_server_extra_args=[*dev_server_flags(), "--log-level", "error"],
        ui=False,
    )
    try:
        cfg.temporal.control_task_queue = f"bench-{uuid.uuid4().hex[:6]}"
        async with Worker(
            env.client,
            task_queue=cfg.temporal.control_task_queue,
            workflows=[DiscoveryWorkflow, SourceServerWorkflow],
            activities=DiscoveryActivities(Deps(cfg)).all(),
            max_concurrent_workflow_tasks=64,
        ):
            started = time.monotonic()
            result = await run_discovery(env.client, cfg)
            elapsed = time.monotonic() - started
        assert result is not None
        print(f"DiscoveryWorkflow: {result.upserted} source servers upserted in {elapsed:.1f}s "
              f"({result.upserted / elapsed:.0f}/s), {result.batches} batches, "
              f"inventory {result.inventory_seconds:.1f}s / {result.round_trips} round trips, "
              f"failures {len(result.failed)}")
    finally:
        await env.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vms", type=int, default=10_000)
    p.add_argument("--upsert", type=int, default=0, metavar="N",
                   help="also run DiscoveryWorkflow on an inventory of N VMs (0: skip)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-discovery-") as tmp:
        started = time.monotonic()
        handle = start_simulator(generate_scenario(args.vms, password=PASSWORD), Path(tmp) / "s")
        print(f"simulator with {args.vms} VMs ready in {time.monotonic() - started:.1f}s")
        try:
            with VcenterSession(handle.host, DEFAULT_ADMIN, PASSWORD, port=handle.port,
                                ca_path=str(handle.ca_path)) as session:
                for attempt in (1, 2):
                    scan = scan_vcenter(session)
                    classify_s = scan.duration_seconds - scan.inventory_seconds
                    print(
                        f"read {attempt}: {scan.vms_seen} VMs in {scan.inventory_seconds:.2f}s "
                        f"with {scan.round_trips} round trips; classified "
                        f"{len(scan.servers)} ({scan.eligible} eligible) in {classify_s:.2f}s; "
                        f"total {scan.duration_seconds:.2f}s"
                    )
        finally:
            handle.stop()

        if args.upsert:
            handle = start_simulator(generate_scenario(args.upsert, password=PASSWORD),
                                     Path(tmp) / "u")
            try:
                cfg = ClientConfig(data_dir=tmp, client_id="bench")
                cfg.vcenter.host, cfg.vcenter.port = handle.host, handle.port
                cfg.vcenter.user, cfg.vcenter.ca_path = DEFAULT_ADMIN, str(handle.ca_path)
                cfg.vcenter.instance_uuid = handle.simulator.instance_uuid
                asyncio.run(upsert_bench(cfg, args.upsert))
            finally:
                handle.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
