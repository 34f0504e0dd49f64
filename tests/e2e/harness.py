"""The whole pipeline on the sandbox: simulator + stub VDDK + local AWS + Temporal + the worker.

Everything below runs the production code path; only the far ends of the wires are sandboxed.
The worker runs in this process (so tests can count and inject), against the session's embedded
Temporal server.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from sandbox.aws.testing import LocalAwsHandle, start_local_aws
from sandbox.vcsim.testing import SimulatorHandle, start_simulator
from snapship.codec import KeyRing
from snapship.config import (
    AwsSettings,
    ClientConfig,
    ReplicationDefaults,
    TelemetrySettings,
    TemporalSettings,
    VcenterSettings,
    source_server_id,
)
from snapship.ebs.client import AwsConnection, AwsCredentials, make_clients
from snapship.ebs.reader import read_snapshot
from snapship.messages import (
    DiscoveredServer,
    Eligibility,
    SourceServerInput,
    SourceServerStatus,
    StartReplicationRequest,
    VmFacts,
)
from snapship.runtime import connect_client
from snapship.secrets import (
    AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    CODEC_KEY,
    VCENTER_PASSWORD,
    SecretStore,
)
from snapship.telemetry.metrics import free_loopback_port
from snapship.vddk.tarball import install_tarball
from worker import run_worker
from workflows.source_server import SourceServerWorkflow

ROOT = Path(__file__).resolve().parents[2]
STUB_DIR = ROOT / "sandbox" / "vddk_stub"
STUB_TARBALL = STUB_DIR / "build" / "VMware-vix-disklib-7.0.3-stub.x86_64.tar.gz"
ADMIN = "administrator@vsphere.local"
# A fixed payload key for tests only, so recorded histories can be replayed later.
TEST_KEYRING = KeyRing(current="test-key-1", keys={"test-key-1": bytes(range(32))})
PASSWORD = "e2e-Secret-vc-password-7431"
AWS_SECRET = "e2e/Secret+aws+key/2291xyz"


def spawn_worker(config: ClientConfig, state_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    """The real worker as its own process (to kill it, or to measure its CPU and RSS alone)."""
    env = dict(os.environ, SNAPSHIP_STUB_VDDK_STATE=str(state_dir))
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "--data-dir", config.data_dir, "--no-metrics"],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def ensure_stub_tarball() -> Path:
    subprocess.run(["make", "-s", "-C", str(STUB_DIR)], check=True)
    return STUB_TARBALL


def scenario(vms: list[dict[str, Any]], **vcenter: Any) -> dict[str, Any]:
    return {
        "vcenter": {"version": "8.0", "record_snapshot_content": True, **vcenter},
        "users": [
            {"name": ADMIN, "password": PASSWORD, "permissions": [{"entity": "/", "role": "Admin"}]}
        ],
        "datacenters": [
            {
                "name": "dc1",
                "datastores": [{"name": "ds1"}, {"name": "ds2"}],
                "networks": ["VM Network"],
                "clusters": [{"name": "cl1", "hosts": ["esx1", "esx2"]}],
                "vms": [{"host": "esx1", "datastore": "ds1", "cbt": False, **vm} for vm in vms],
            }
        ],
    }


@dataclass
class Sandbox:
    sim: SimulatorHandle
    aws: LocalAwsHandle
    config: ClientConfig
    client: Client
    workflows: dict[str, WorkflowHandle] = field(default_factory=dict)

    def id_prefix(self) -> str:
        """Workflow ids of this sandbox's VMs start with this (for visibility queries)."""
        return source_server_id(self.config.client_id, "")

    def aws_clients(self) -> Any:
        return make_clients(
            AwsConnection(
                region=self.aws.region,
                endpoint_url=self.aws.endpoint_url,
                credentials=lambda: AwsCredentials(
                    self.aws.access_key_id, self.aws.secret_access_key
                ),
            )
        )

    def vm_input(self, name: str, **kwargs: Any) -> SourceServerInput:
        vm = self.sim.admin.vm(name)
        vc_uuid = self.config.client_id
        sid = source_server_id(vc_uuid, vm["instance_uuid"])
        return SourceServerInput(
            source_server_id=sid,
            vcenter_host=self.config.vcenter.host,
            vcenter_uuid=vc_uuid,
            vm_instance_uuid=vm["instance_uuid"],
            vm_name=name,
            discovered=DiscoveredServer(
                facts=VmFacts(moref=vm["moref"], name=name, instance_uuid=vm["instance_uuid"]),
                eligibility=Eligibility(True),
                discovered_at="2026-11-25T00:00:00+00:00",
            ),
            shipping_task_queue=self.config.temporal.shipping_task_queue,
            **kwargs,
        )

    async def start(self, name: str, interval: int = 3600, **kwargs: Any) -> WorkflowHandle:
        inp = self.vm_input(name, **kwargs)
        handle = await self.client.start_workflow(
            SourceServerWorkflow.run,
            inp,
            id=inp.source_server_id,
            task_queue=self.config.temporal.control_task_queue,
        )
        self.workflows[name] = handle
        await handle.execute_update(
            SourceServerWorkflow.start_replication,
            StartReplicationRequest(interval_seconds=interval),
        )
        return handle

    def history_images(self, vm: str) -> dict[str, dict[int, Path]]:
        """VMware snapshot name -> deviceKey -> point-in-time image the simulator kept."""
        out: dict[str, dict[int, Path]] = {}
        for h in self.sim.admin.history():
            if h.get("vm") != vm:
                continue
            out[h["snapshot"]] = {int(k): Path(p) for k, p in h["disks"].items()}
        return out

    def verify_group(self, vm: str, status: SourceServerStatus, run: Any) -> int:
        """Rebuild every disk of a run's group from EBS and compare with the VMware snapshot.

        Returns the number of disks compared; raises AssertionError on any difference.
        """
        from snapship.ebs.groups import describe_group

        clients = self.aws_clients()
        group = describe_group(clients.ec2, run.group_id)
        assert group is not None and group.complete, f"group {run.group_id} incomplete"
        attempt = run.group_id.rsplit("/", 1)[1]
        images = None
        for snap_name, by_key in self.history_images(vm).items():
            if snap_name.endswith("@" + attempt):
                images = by_key
        assert images is not None, f"no simulator history for {vm} {attempt}"
        compared = 0
        for snap in group.by_device_key():
            image = images[snap.tags.device_key]
            want = image.read_bytes()
            got = read_snapshot(clients.ebs, snap.snapshot_id, len(want))
            assert got == want, f"{vm} disk {snap.tags.device_key} differs in {run.group_id}"
            compared += 1
        assert compared == len(images)
        return compared


NOT_FOR_PEOPLE = re.compile(
    r"\(vim\.|\(vmodl\.|vim\.[A-Za-z.]+\(|<[A-Za-z_.]+ object at|Traceback|'msg'|"
    r"\bdynamicProperty\b|\bfaultCause\b|\n|\r"
)
"""What a pyvmomi repr, a Python repr or a traceback looks like; a person never reads it."""


def assert_for_people(texts: list[str]) -> None:
    """Each text is one line a person reads: no newline, no repr, no traceback."""
    for text in texts:
        assert not NOT_FOR_PEOPLE.search(text), repr(text)


def person_texts(st: SourceServerStatus) -> list[str]:
    """Every text of a status meant for a person (last_error, run reasons, notes, the retry)."""
    texts = [st.last_error, *(r.reason for r in st.runs if r.reason), *st.notes]
    if st.retry is not None:
        texts.append(st.retry.message)
    for text in texts:
        assert text == text.strip(), repr(text)
    return [t for t in texts if t]


QUERY_RETRY_STATUSES = frozenset(
    {RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.UNAVAILABLE}
)


async def wait_status(
    handle: WorkflowHandle,
    pred: Callable[[SourceServerStatus], bool],
    timeout: float = 120,
    every: float = 0.3,
) -> SourceServerStatus:
    """Poll the status query every `every` seconds until `pred` holds. Every status seen on the
    way is checked for texts a person could not read (so each e2e test checks its own faults'
    outputs)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            st: SourceServerStatus = await handle.query(SourceServerWorkflow.status)
        except RPCError as err:
            # A query sent while the workflow's worker was just killed waits on its sticky
            # queue and can come back cancelled (CI saw "context canceled"): the next one goes
            # to a live worker. Anything else is the test's failure.
            if err.status not in QUERY_RETRY_STATUSES or loop.time() > deadline:
                raise
            await asyncio.sleep(every)
            continue
        assert_for_people(person_texts(st))
        if pred(st):
            return st
        if loop.time() > deadline:
            raise AssertionError(f"timed out; last status {st}")
        await asyncio.sleep(every)


def runs_ok(n: int) -> Callable[[SourceServerStatus], bool]:
    return lambda s: sum(r.outcome == "SUCCEEDED" for r in s.runs) >= n


def make_config(
    data_dir: Path,
    sim: SimulatorHandle,
    aws: LocalAwsHandle,
    temporal_address: str,
    shipping_slots: int = 4,
) -> ClientConfig:
    tag = uuid.uuid4().hex[:8]
    data_dir.mkdir(parents=True, exist_ok=True)
    lib = install_tarball(ensure_stub_tarball(), data_dir)
    config = ClientConfig(
        client_id=f"client-{tag}",
        data_dir=str(data_dir),
        vcenter=VcenterSettings(host=sim.host, port=sim.port, user=ADMIN, ca_path=str(sim.ca_path)),
        aws=AwsSettings(region=aws.region, endpoint_url=aws.endpoint_url),
        temporal=TemporalSettings(
            address=temporal_address,
            control_task_queue=f"control-{tag}",
            shipping_task_queue=f"shipping-{tag}",
        ),
        replication=ReplicationDefaults(shipping_slots=shipping_slots, ebs_concurrency=16),
        telemetry=TelemetrySettings(
            metrics_port=free_loopback_port(),
            temporal_metrics_port=free_loopback_port(),
            codec_port=0,
        ),
        vddk_lib_path=str(lib),
    )
    config.save()
    store = SecretStore(config.secrets_path)
    store.set(VCENTER_PASSWORD, PASSWORD)
    store.set(AWS_ACCESS_KEY_ID, aws.access_key_id)
    store.set(AWS_SECRET_ACCESS_KEY, AWS_SECRET)
    store.set(CODEC_KEY, TEST_KEYRING.to_text())
    return config


@asynccontextmanager
async def sandbox(
    tmp_path: Path,
    env: WorkflowEnvironment,
    vms: list[dict[str, Any]],
    shipping_slots: int = 4,
    run_worker_inline: bool = True,
    temporal_address: str | None = None,
    tune: Callable[[ClientConfig], None] | None = None,
    metrics: bool = False,
    **vcenter: Any,
) -> AsyncIterator[Sandbox]:
    sim = start_simulator(scenario(vms, **vcenter), tmp_path / "vcenter")
    aws = start_local_aws(tmp_path / "aws")
    os.environ["SNAPSHIP_STUB_VDDK_STATE"] = str(sim.state_dir)
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        address = temporal_address or env.client.service_client.config.target_host
        config = make_config(tmp_path / "client", sim, aws, address, shipping_slots)
        if tune is not None:
            tune(config)
            config.save()
        client = await connect_client(config)
        if run_worker_inline:
            task = asyncio.create_task(run_worker(config, stop, metrics=metrics))
        yield Sandbox(sim, aws, config, client)
    finally:
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, 60)
        aws.stop()
        sim.stop()
