"""snapship's worker: the control task queue and one capped shipping task queue per vCenter.

The parallel caps (MGN: at most 50 VMs of a vCenter ship at once, plus per-host and
per-datastore disk caps) are counted by one permit coordinator workflow per vCenter
(workflows/permits.py), so they hold across any number of these workers; a shipping queue's
worker slots only bound this worker's own load. A vCenter added with `snapship vcenter add` gets
its queue polled within seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client
from temporalio.worker import Worker

from activities.deps import WorkerDeps
from activities.discovery import DiscoveryActivities
from activities.fault_boundary import FaultBoundary
from activities.launch import LaunchActivities
from activities.permits import PermitActivities
from activities.replication import ReplicationActivities
from snapship import vcenters
from snapship.codec import EncryptionCodec
from snapship.codec_server import start_codec_server, ui_origins
from snapship.config import MAX_SHIPPING_SLOTS, ClientConfig, ConfigError, default_data_dir
from snapship.permit_messages import PermitLimits, PermitsView
from snapship.permit_view import coordinator_views
from snapship.runtime import connect_client, load_keyring
from snapship.telemetry.logs import configure_logging
from snapship.telemetry.metrics import (
    start_metrics_server,
    stop_metrics_server,
    temporal_runtime,
)
from workflows.discovery import DiscoveryWorkflow
from workflows.launch_job import LaunchJobWorkflow
from workflows.permits import PermitCoordinatorWorkflow
from workflows.source_server import SourceServerWorkflow

log = logging.getLogger("snapship.worker")
HEARTBEAT_THROTTLE = timedelta(seconds=2)
STICKY_TIMEOUT = timedelta(seconds=3)
"""How long a workflow task waits on the sticky queue of the worker that has the workflow cached
before any worker may take it. A SIGKILLed worker never says it is gone, so every workflow it
had cached (each VM's, the permit coordinator's, and with it every VM's next permit) waited the
SDK's default 10 s per task after a crash; a live worker polls its sticky queue far more often
than every 3 s, and a miss costs only a history replay on another worker."""
VCENTER_WATCH_S = 10.0


def shipping_slots(config: ClientConfig) -> int:
    return max(1, min(MAX_SHIPPING_SLOTS, config.replication.shipping_slots))


def shipping_queues(config: ClientConfig) -> dict[str, int]:
    """Shipping task queue -> worker slots, one queue per configured vCenter.

    The slots bound this worker's own load (the client's size); a vCenter's cap is its permit
    coordinator's, so changing it (`snapship vcenter update --max-shipping`) needs no restart.
    """
    return {
        vcenters.shipping_task_queue(config, vc): shipping_slots(config)
        for vc in vcenters.all_vcenters(config)
    }


def permit_limits(config: ClientConfig, vcenter_id: str) -> PermitLimits:
    """The limits a vCenter's permit coordinator starts with: the vCenter's cap (its own, else
    the client's size as MGN sizes it), the rest from the configuration."""
    rep = config.replication
    try:
        vc = vcenters.find_vcenter(config, vcenter_id)
    except vcenters.UnknownVcenter:
        vc = config.vcenter
    return PermitLimits(
        vcenter_vms=vcenters.shipping_slots(config, vc),
        host_disks=rep.host_disk_cap,
        datastore_disks=rep.datastore_disk_cap,
        total_mbps=rep.total_mbps,
        vm_mbps=rep.vm_mbps,
        ebs_requests_per_second=rep.ebs_requests_per_second,
        blackout_windows=list(rep.blackout_windows),
    )


def build_workers(client: Client, config: ClientConfig, deps: WorkerDeps) -> list[Worker]:
    replication = ReplicationActivities(deps)
    discovery = DiscoveryActivities(deps)
    permits = PermitActivities(lambda vcenter_id: permit_limits(config, vcenter_id))
    control_acts = (
        [a for a in replication.all() if a != replication.ship] + discovery.all() + permits.all()
    )
    boundary = FaultBoundary(client)  # every activity's failure: classified, one line
    control_acts += LaunchActivities(deps).all()
    control = Worker(
        client,
        task_queue=config.temporal.control_task_queue,
        workflows=[
            SourceServerWorkflow, DiscoveryWorkflow, PermitCoordinatorWorkflow, LaunchJobWorkflow
        ],
        activities=control_acts,
        activity_executor=ThreadPoolExecutor(max_workers=32, thread_name_prefix="activity"),
        max_concurrent_activities=32,
        interceptors=[boundary],
        sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        default_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
    )
    shipping = [
        shipping_worker(client, replication, queue, slots)
        for queue, slots in shipping_queues(config).items()
    ]
    return [control, *shipping]


def shipping_worker(
    client: Client, replication: ReplicationActivities, queue: str, slots: int
) -> Worker:
    return Worker(
        client,
        task_queue=queue,
        activities=[replication.ship],
        max_concurrent_activities=slots,
        interceptors=[FaultBoundary(client)],
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        default_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
    )


async def run_worker(config: ClientConfig, stop: asyncio.Event, metrics: bool = True) -> None:
    runtime = None
    if metrics:
        start_metrics_server(config.telemetry.metrics_port, config.telemetry.metrics_address)
        runtime = temporal_runtime(
            config.telemetry.temporal_metrics_port, config.telemetry.metrics_address
        )
    codec_server = start_codec_server(
        EncryptionCodec(load_keyring(config)),
        port=config.telemetry.codec_port,
        addr=config.telemetry.codec_address,
        allowed_origins=ui_origins(config.temporal.ui_port),
    )
    client = await connect_client(config, runtime=runtime)
    deps = WorkerDeps(config)
    workers = build_workers(client, config, deps)
    # Everything made so far (modules, AWS service models, the SDK) lives as long as the
    # worker: out of the collector's sight. A full collection walked all of it, 0.15 s of CPU
    # each, about once per GiB shipped; with the start-up frozen, 0.06 s.
    gc.freeze()
    log.info(
        "worker running: control=%s shipping=%s codec=http://%s:%d",
        config.temporal.control_task_queue,
        ", ".join(f"{q} ({n} slots)" for q, n in shipping_queues(config).items()),
        codec_server.host,
        codec_server.port,
    )
    tasks = [asyncio.create_task(w.run()) for w in workers]
    tasks.append(asyncio.create_task(check_vddk(deps)))
    tasks.append(asyncio.create_task(watch_shipping_queue(client, config, deps)))
    tasks.append(asyncio.create_task(watch_vcenters(client, config, deps, workers)))
    try:
        await stop.wait()
    finally:
        await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
        for t in tasks:
            t.cancel()
        codec_server.stop()
        if metrics:
            stop_metrics_server(config.telemetry.metrics_port)


async def watch_vcenters(
    client: Client,
    config: ClientConfig,
    deps: WorkerDeps,
    workers: list[Worker],
    every_s: float | None = None,
) -> None:
    """Start polling the shipping queue of a vCenter added while the worker runs (`snapship
    vcenter add`), so adding a vCenter needs no worker restart. A removed vCenter's queue keeps
    its poller: nothing is sent to it any more, and its activities refuse to run."""
    polled = set(shipping_queues(config))
    replication: ReplicationActivities | None = None
    running: list[asyncio.Task[None]] = []  # run_worker shuts the workers down
    while True:
        await asyncio.sleep(every_s if every_s is not None else VCENTER_WATCH_S)
        try:
            fresh = ClientConfig.load(Path(config.data_dir))
        except Exception as err:  # a config being rewritten: look again next time
            log.debug("could not re-read the config: %s", err)
            continue
        for queue, slots in shipping_queues(fresh).items():
            if queue in polled:
                continue
            replication = replication or ReplicationActivities(deps)
            worker = shipping_worker(client, replication, queue, slots)
            workers.append(worker)
            polled.add(queue)
            running.append(asyncio.create_task(worker.run()))
            log.info("shipping from a newly added vCenter: %s (%d slots)", queue, slots)


async def check_vddk(deps: WorkerDeps) -> None:
    """Start one VDDK reader process at worker start, so a broken VDDK install is one clear log
    line now instead of a failure in every VM's shipping later."""
    try:
        await asyncio.to_thread(deps.vddk().check)
    except Exception as err:
        log.error("VDDK does not start in a reader process, shipping will fail: %s", err)
    else:
        log.info("VDDK reader processes start (library %s)", deps.config.vddk_lib_path)


async def watch_shipping_queue(client: Client, config: ClientConfig, deps: WorkerDeps) -> None:
    """Keep the `shipping_waiting` gauge current from the same search attribute the console
    shows (only the workflows know they are queued; the worker only sees running slots)."""
    while True:
        # Every vCenter of the client, as `snapship servers` counts them (re-read: one may be
        # added while the worker runs).
        host, extra = vcenters.visibility_scope(deps.config, None)
        parts = ["SnapshipDataReplicationState = 'PENDING_SNAPSHOT_SHIPPING'", *extra]
        if host:
            parts.append(f"SnapshipVcenterHost = '{host}'")
        query = " AND ".join(parts)
        try:
            waiting = (await client.count_workflows(query)).count
            deps.metrics.shipping_waiting.set(waiting)
            publish_permits(deps, await coordinator_views(client))
        except Exception as err:  # visibility hiccups must not stop the worker
            log.debug("could not count queued VMs: %s", err)
        await asyncio.sleep(15)


def publish_permits(deps: WorkerDeps, views: list[PermitsView]) -> None:
    """The coordinators' view as gauges, so dashboards show who holds and who waits."""
    m = deps.metrics
    m.permit_host_disks.clear()  # a host with nothing in use any more is not shown at its last
    for view in views:
        cid = view.coordinator_id
        m.permits_held.labels(cid).set(view.vms_in_use)
        m.permits_waiting.labels(cid).set(len(view.waiting))
        m.permits_cap.labels(cid).set(view.limits.vcenter_vms)
        for host, n in view.disks_per_host.items():
            m.permit_host_disks.labels(cid, host).set(n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="snapship-worker", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=None, help="client data directory")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = ClientConfig.load(args.data_dir or default_data_dir())
    except ConfigError as err:
        print(f"snapship-worker: {err}", file=sys.stderr)
        return 2

    async def amain() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(config, stop, metrics=not args.no_metrics)

    asyncio.run(amain())
    return 0


if __name__ == "__main__":
    sys.exit(main())
