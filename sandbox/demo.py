"""The end-to-end demo: from a new client to VMs replicating, every snapshot group verified.

`python -m sandbox.demo` (also `snapship demo` and `snapship-sandbox demo`). In a work directory
it starts the vSphere simulator (recording each VMware snapshot's content), local AWS and the
Temporal dev server, then drives snapship exactly as a user would — `snapship install` (stub
VDDK tarball, the simulator's CA), `snapship worker`, `snapship discover`, `snapship replicate
start --all-discovered` — while the guests keep writing. After a few runs per VM it stops
replication and verifies: every EBS snapshot group, rebuilt through the EBS direct APIs, equals
byte for byte the simulator's image of the VMware snapshot it came from (matched by the
snapshot name, which carries the source server and run id), and no snapship snapshot is left on
any VM. Exit status 0 only when all of that holds. Every process it starts is stopped on exit,
Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snapship.appliance import DMI_PATH_ENV

ROOT = Path(__file__).resolve().parents[1]
STUB_TARBALL = (
    ROOT / "sandbox" / "vddk_stub" / "build" / "VMware-vix-disklib-7.0.3-stub.x86_64.tar.gz"
)
DEMO_SCENARIO = ROOT / "sandbox" / "scenarios" / "demo.yaml"
ADMIN = "administrator@vsphere.local"
REPLICATION_USER = "snapship@vsphere.local"
MIB = 1 << 20

# Used when sandbox/scenarios/demo.yaml is absent: a small estate with every kind of VM.
BUILTIN_SCENARIO: dict[str, Any] = {
    "vcenter": {"version": "8.0", "record_snapshot_content": True},
    "users": [{"name": ADMIN, "password": "demo-Passw0rd",
               "permissions": [{"entity": "/", "role": "Admin"}]}],
    "datacenters": [{
        "name": "dc-demo",
        "datastores": [{"name": "ds-gold", "type": "VMFS"}, {"name": "ds-silver", "type": "NFS"}],
        "networks": ["VM Network"],
        "clusters": [{"name": "cluster-a", "hosts": ["esx-01", "esx-02"]}],
        "vms": [
            {"name": "web-01", "host": "esx-01", "guest_id": "ubuntu64Guest", "cpus": 2,
             "memory_mb": 4096, "disks": [{"capacity_mib": 24}, {"capacity_mib": 8}]},
            {"name": "app-01", "host": "esx-02", "datastore": "ds-silver", "firmware": "efi",
             "guest_id": "windows2019srv_64Guest", "disks": [{"capacity_mib": 16}]},
            {"name": "batch-01", "host": "esx-02", "power": "poweredOff",
             "disks": [{"capacity_kb": 12 * 1024 + 64}]},
            {"name": "db-legacy", "disks": [{"capacity_mib": 8}], "snapshots": ["pre-upgrade"]},
            {"name": "tmpl-ubuntu", "template": True, "disks": [{"capacity_mib": 8}]},
            {"name": "snapship-client", "snapship_client": True, "disks": [{"capacity_mib": 8}]},
        ],
    }],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def say(text: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {text}", flush=True)


@dataclass
class Demo:
    work: Path
    home: Path
    runs: int
    interval: int
    timeout: float
    sim: Any = None
    aws: Any = None
    temporal: Any = None
    worker: subprocess.Popen[bytes] | None = None
    writer_stop: threading.Event = field(default_factory=threading.Event)
    writes: int = 0
    failures: list[str] = field(default_factory=list)
    codec_port: int = field(default_factory=free_port)
    dmi_path: Path | None = None
    appliance: str = ""

    # ------------------------------------------------------------ processes

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        env["SNAPSHIP_HOME"] = str(self.home)
        if self.dmi_path is not None:
            # The appliance VM's DMI table as its guest sees it (sandbox/appliance.py).
            env[DMI_PATH_ENV] = str(self.dmi_path)
        return env

    def snapship(self, *argv: str, ok: tuple[int, ...] = (0,), show: bool = True) -> str:
        """Run a `snapship` command as a user would; its output is echoed and returned."""
        cmd = [sys.executable, "-m", "starter", *argv]
        masked = list(argv)
        for i, a in enumerate(masked[:-1]):
            if a in ("--aws-secret-access-key", "--vcenter-password"):
                masked[i + 1] = "***"
        shown = " ".join(a if " " not in a else repr(a) for a in masked)
        say(f"$ snapship {shown}")
        proc = subprocess.run(cmd, cwd=ROOT, env=self.env(), capture_output=True, text=True,
                              timeout=600)
        text = proc.stdout + proc.stderr
        if show:
            for line in text.rstrip().splitlines():
                print(f"    {line}", flush=True)
        if proc.returncode not in ok:
            raise RuntimeError(f"`snapship {argv[0]}` exited {proc.returncode}")
        return proc.stdout

    # ------------------------------------------------------------ steps

    def start_sandbox(self, scenario: Path | dict[str, Any]) -> None:
        from sandbox.aws.testing import start_local_aws
        from sandbox.vcsim.scenario import load_scenario
        from sandbox.vcsim.testing import start_simulator

        sc = load_scenario(scenario)
        sc.setdefault("vcenter", {})["record_snapshot_content"] = True
        self.sim = start_simulator(sc, self.work / "vcsim")
        say(f"vSphere simulator at {self.sim.url} ({len(self.sim.admin.vms())} VMs)")
        self.aws = start_local_aws(self.work / "aws")
        say(f"local AWS at {self.aws.endpoint_url} ({self.aws.region})")

    def start_temporal(self) -> None:
        """`snapship temporal start`, as a user would (the server outlives the command)."""
        from snapship import temporal_server as ts

        self.temporal = ts.DevServerSettings(
            data_dir=self.home, port=free_port(), ui_port=free_port(),
            ui_codec_endpoint=f"http://127.0.0.1:{self.codec_port}",
        )
        self.snapship(*self.temporal_flags("start"),
                      "--ui-codec-endpoint", str(self.temporal.ui_codec_endpoint))

    def temporal_flags(self, action: str) -> list[str]:
        assert self.temporal is not None
        return ["temporal", action, "--data-dir", str(self.home),
                "--port", str(self.temporal.port), "--ui-port", str(self.temporal.ui_port)]

    def install(self) -> None:
        """`snapship install` as a user types it: the client finds its own VM by itself."""
        from sandbox.appliance import write_appliance_dmi

        self.dmi_path = write_appliance_dmi(self.sim.admin, self.work / "appliance")
        # The least-privileged user the scenario offers for replication, else the admin.
        user = next((u for u in (REPLICATION_USER, ADMIN) if u in self.sim.users),
                    next(iter(self.sim.users)))
        password = self.sim.users[user]
        argv = [
            "install", "--no-prompt", "--force-delete-existing-client",
            "--data-dir", str(self.home),
            "--aws-access-key-id", self.aws.access_key_id,
            "--aws-secret-access-key", self.aws.secret_access_key,
            "--region", self.aws.region, "--endpoint", self.aws.endpoint_url,
            "--vcenter-host", self.sim.host, "--vcenter-port", str(self.sim.port),
            "--vcenter-user", user, "--vcenter-password", password,
            "--vcenter-ca-path", str(self.sim.ca_path),
            "--vddk-path", str(STUB_TARBALL),
            "--vcenter-client-tags", "site=demo",
            "--source-server-tags", "wave=demo", "migration=snapship",
            "--temporal-address", self.temporal.address,
            "--temporal-ui-port", str(self.temporal.ui_port),
            "--replication-interval", str(self.interval),
        ]
        self.snapship(*argv)
        # Demo only: private ports for metrics and the codec server, so the demo never collides
        # with another snapship on this machine.
        from snapship.config import ClientConfig

        cfg = ClientConfig.load(self.home)
        if self.dmi_path is not None:
            self.appliance = next(
                v["name"] for v in self.sim.admin.vms()
                if self.sim.admin.vm(v["name"]).get("snapship_client")
            )
            if not cfg.client_vm_uuid:
                self.failures.append(f"install did not find the appliance VM {self.appliance}")
        cfg.telemetry.metrics_port = free_port()
        cfg.telemetry.temporal_metrics_port = free_port()
        cfg.telemetry.codec_port = self.codec_port
        cfg.save()

    def start_worker(self) -> None:
        env = self.env()
        env["SNAPSHIP_STUB_VDDK_STATE"] = str(self.sim.state_dir)
        log = (self.work / "worker.log").open("ab")
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "worker", "--data-dir", str(self.home)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        asyncio.run(self.wait_for_worker())
        say(f"worker started (pid {self.worker.pid}; log {self.work / 'worker.log'})")

    async def wait_for_worker(self, timeout: float = 120.0) -> None:
        """Until the worker polls the control queue: the console refuses commands before that."""
        from snapship.cli.worker_check import live_pollers
        from snapship.config import ClientConfig
        from snapship.runtime import connect_client

        cfg = ClientConfig.load(self.home)
        client = await connect_client(cfg)
        deadline = time.monotonic() + timeout
        while not await live_pollers(client, cfg.temporal.control_task_queue):
            if self.worker is not None and self.worker.poll() is not None:
                raise RuntimeError(f"the worker exited (code {self.worker.returncode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not poll Temporal within {timeout:.0f} s")
            await asyncio.sleep(0.5)

    def seed_guest_data(self) -> None:
        """Give every eligible disk some content before the initial sync."""
        for brief in self.sim.admin.vms():
            vm = self.sim.admin.vm(brief["name"])
            if vm.get("template") or vm.get("snapship_client"):
                continue
            for index, disk in enumerate(vm["disks"]):
                cap = int(disk["capacity"])
                for n in range(4):
                    length = min(512 * 1024, cap)
                    offset = random.Random(n).randrange(0, max(1, cap - length)) & ~511
                    self.sim.admin.write(vm["name"], offset, disk=index, length=length,
                                         random_seed=zlib.crc32(f"{vm['name']}/{index}/{n}".encode()))

    def _writer(self, names: list[str]) -> None:
        rng = random.Random(7)
        vms = {n: self.sim.admin.vm(n) for n in names}
        while not self.writer_stop.wait(1.5):
            name = rng.choice(names)
            disks = vms[name]["disks"]
            index = rng.randrange(len(disks))
            cap = int(disks[index]["capacity"])
            length = rng.choice([4096, 65536, 300_000, 1 << 20])
            length = min(length, cap)
            offset = rng.randrange(0, cap - length + 1) & ~511
            try:
                if rng.random() < 0.15:
                    self.sim.admin.write(name, offset, disk=index, length=length, zero=True)
                else:
                    self.sim.admin.write(name, offset, disk=index, length=length,
                                         random_seed=rng.randrange(1 << 30))
                self.writes += 1
            except Exception as exc:  # a VM busy with a task: try again next tick
                say(f"guest write to {name} skipped: {exc}")

    @contextlib.contextmanager
    def guests_writing(self, names: list[str]) -> Iterator[None]:
        thread = threading.Thread(target=self._writer, args=(names,), daemon=True)
        thread.start()
        try:
            yield
        finally:
            self.writer_stop.set()
            thread.join(timeout=10)

    async def wait_for_runs(self, names: list[str]) -> dict[str, Any]:
        """Poll the servers' status until each has `runs` successful runs."""
        from snapship.cli import console
        from snapship.config import ClientConfig
        from snapship.runtime import connect_client

        cfg = ClientConfig.load(self.home)
        client = await connect_client(cfg)
        deadline = time.monotonic() + self.timeout
        last_line = ""
        while True:
            rows = (await console.select(client, console.VIEW_ALL, cfg.vcenter.host)).rows
            rows = [r for r in rows if r.vm_name in names]
            done = {
                r.vm_name: sum(1 for run in (r.status.runs if r.status else [])
                               if run.outcome == "SUCCEEDED")
                for r in rows
            }
            line = ", ".join(
                f"{r.vm_name} {done[r.vm_name]}/{self.runs} {r.data_replication_state}"
                for r in rows
            )
            if line != last_line:
                say(f"runs: {line}")
                last_line = line
            if rows and all(done.get(n, 0) >= self.runs for n in names):
                return {r.vm_name: r for r in rows}
            if time.monotonic() > deadline:
                errors = "; ".join(f"{r.vm_name}: {r.status.last_error}" for r in rows
                                   if r.status and r.status.last_error)
                raise RuntimeError(
                    f"timed out after {self.timeout:.0f}s waiting for {self.runs} runs per VM"
                    + (f" ({errors})" if errors else "")
                )
            await asyncio.sleep(2)

    # ------------------------------------------------------------ verification

    def verify_groups(self, names: list[str]) -> tuple[int, int]:
        """Every complete group of every VM equals the simulator's snapshot images."""
        from snapship.config import ClientConfig
        from snapship.ebs.groups import describe_groups
        from snapship.ebs.reader import read_snapshot
        from snapship.vsphere.snapshots import parse_snapshot_name

        cfg = ClientConfig.load(self.home)
        ebs = self.aws.client("ebs")
        ec2 = self.aws.client("ec2")
        history = self.sim.admin.history()
        by_run: dict[tuple[str, str], dict[str, Any]] = {}
        for entry in history:
            parsed = parse_snapshot_name(entry["snapshot"])
            if parsed is not None:
                by_run[parsed] = entry
        groups_ok = 0
        disks_ok = 0
        vms = {n: self.sim.admin.vm(n) for n in names}
        from snapship.config import source_server_id

        for name in names:
            server = source_server_id(cfg.vcenter.instance_uuid, vms[name]["instance_uuid"])
            groups = [g for g in describe_groups(ec2, server) if g.complete]
            if len(groups) < self.runs:
                self.failures.append(f"{name}: {len(groups)} complete groups, expected "
                                     f">= {self.runs}")
            for group in sorted(groups, key=lambda g: g.point_in_time):
                entry = by_run.get((server, group.run_id)) or next(
                    (e for (wf, run), e in by_run.items()
                     if wf == server and run.startswith(group.run_id)), None)
                if entry is None:
                    self.failures.append(f"{name} {group.group_id}: no VMware snapshot "
                                         f"recorded for run {group.run_id}")
                    continue
                good = True
                for snap in group.by_device_key():
                    image = Path(entry["disks"][str(snap.tags.device_key)])
                    expected = image.read_bytes()
                    actual = read_snapshot(ebs, snap.snapshot_id, len(expected))
                    if actual != expected:
                        first = next(i for i in range(len(expected)) if actual[i] != expected[i])
                        self.failures.append(
                            f"{name} {group.group_id} disk {snap.tags.device_key}: EBS "
                            f"snapshot {snap.snapshot_id} differs from VMware snapshot "
                            f"{entry['snapshot']} at byte {first}")
                        good = False
                    else:
                        disks_ok += 1
                if good:
                    groups_ok += 1
                    say(f"verified {name} {group.run_id} group {group.group_id}: "
                        f"{len(group.snapshots)} disk(s) identical to {entry['snapshot']}")
        return groups_ok, disks_ok

    def verify_no_leftover_snapshots(self) -> None:
        for brief in self.sim.admin.vms():
            vm = self.sim.admin.vm(brief["name"])
            ours = [s["name"] for s in vm["snapshots"] if s["name"].startswith("snapship-")]
            if ours:
                self.failures.append(f"{vm['name']}: snapship snapshot(s) left: {ours}")

    # ------------------------------------------------------------ cleanup

    def stop_all(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.worker.pid, signal.SIGTERM)
            try:
                self.worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.worker.pid, signal.SIGKILL)
                self.worker.wait(timeout=5)
        if self.temporal is not None:
            with contextlib.suppress(Exception):
                self.snapship(*self.temporal_flags("stop"), show=False)
        for part in (self.aws, self.sim):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.stop()


def test_and_cut_over(demo: Demo, name: str) -> None:
    """The end of a migration for one VM: a test instance, ready for cutover, a cutover with a
    final sync (the guest is shut down, one more run ships, the instance launches from exactly
    that group), finalize. Each step is the console command a user would type."""
    home = ["--data-dir", str(demo.home)]
    steps: list[tuple[str, ...]] = [
        ("test", name, "--wait"),
        ("mark-ready", name),
        ("cutover", name, "--wait"),
        ("finalize", name),
    ]
    for step in steps:
        out = demo.snapship(*step, *home, ok=(0, 3))
        if "REFUSED" in out or "FAILED" in out:
            demo.failures.append(f"{name}: `snapship {' '.join(step)}` did not succeed")
            return
    demo.snapship("servers", "show", name, *home)
    demo.snapship("jobs", *home)
    power = demo.sim.admin.vm(name)["power_state"]
    if power != "poweredOff":
        demo.failures.append(f"{name}: the source is {power} after its cutover")


def run_demo(demo: Demo, scenario: Path | dict[str, Any], hold: bool) -> int:
    started = time.monotonic()
    if not STUB_TARBALL.is_file():
        say(f"{STUB_TARBALL} is missing: run scripts/setup.sh first")
        return 2
    demo.start_sandbox(scenario)
    demo.start_temporal()
    demo.install()
    demo.start_worker()
    demo.seed_guest_data()
    demo.snapship("discover", "--data-dir", str(demo.home))
    listed = demo.snapship("servers", "--discovered", "--data-dir", str(demo.home))
    if demo.appliance and demo.appliance in listed.split():
        demo.failures.append(f"discovery listed the appliance VM {demo.appliance}")
    out = demo.snapship("replicate", "start", "--all-discovered", "--interval",
                        str(demo.interval), "--data-dir", str(demo.home), ok=(0, 3))
    names = [line.split()[0] for line in out.splitlines() if " ok " in f" {line} "]
    if not names:
        say("no VM accepted replication")
        return 1
    say(f"replicating {', '.join(names)}; guests keep writing; waiting for {demo.runs} runs each")
    with demo.guests_writing(names):
        asyncio.run(demo.wait_for_runs(names))
    demo.snapship("servers", "--data-dir", str(demo.home))
    demo.snapship("servers", "show", names[0], "--data-dir", str(demo.home))
    test_and_cut_over(demo, names[0])
    demo.snapship("replicate", "stop", "--all", "--data-dir", str(demo.home), ok=(0, 3))
    groups_ok, disks_ok = demo.verify_groups(names)
    demo.verify_no_leftover_snapshots()
    demo.snapship("servers", "--all", "--data-dir", str(demo.home))
    elapsed = time.monotonic() - started
    print()
    say("summary")
    print(f"    VMs replicated:        {len(names)} ({', '.join(names)})")
    print(f"    guest writes:          {demo.writes}")
    print(f"    snapshot groups:       {groups_ok} verified byte for byte ({disks_ok} disks)")
    print(f"    leftover snapshots:    "
          f"{'none' if not any('left' in f for f in demo.failures) else 'FOUND'}")
    print(f"    Temporal Web UI:       http://127.0.0.1:{demo.temporal.ui_port}")
    print(f"    elapsed:               {elapsed:.0f}s")
    if demo.failures:
        print("    FAILED:")
        for f in demo.failures:
            print(f"      - {f}")
        return 1
    print("    result:                OK")
    if hold:
        say("holding (Ctrl-C to stop and clean up)")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="snapship demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where to keep everything (default: a temporary directory, removed)")
    p.add_argument("--scenario", type=Path, default=None,
                   help="simulator scenario (default sandbox/scenarios/demo.yaml)")
    p.add_argument("--runs", type=int, default=3, help="successful runs to wait for per VM")
    p.add_argument("--interval", type=int, default=20, help="seconds between runs")
    p.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--hold", action="store_true",
                   help="after verifying, keep everything running for the Web UI until Ctrl-C")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    given = args.work_dir is not None
    work = (args.work_dir or Path(tempfile.mkdtemp(prefix="snapship-demo-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    scenario: Path | dict[str, Any]
    if args.scenario is not None:
        scenario = args.scenario
    elif DEMO_SCENARIO.is_file():
        scenario = DEMO_SCENARIO
    else:
        scenario = BUILTIN_SCENARIO
    demo = Demo(work=work, home=work / "home", runs=args.runs, interval=args.interval,
                timeout=args.timeout)

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)  # `kill` cleans up like Ctrl-C
    say(f"work directory {work}")
    code = 1
    try:
        code = run_demo(demo, scenario, args.hold)
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        code = 130
    except Exception as exc:
        say(f"FAILED: {type(exc).__name__}: {exc}")
        log = work / "worker.log"
        if log.exists():
            tail = log.read_text(errors="replace").splitlines()[-25:]
            print("    worker log (last lines):")
            for line in tail:
                print(f"      {line}")
        code = 1
    finally:
        demo.stop_all()
        if not (given or args.keep) and code == 0:
            shutil.rmtree(work, ignore_errors=True)
        elif code != 0:
            say(f"kept {work} for inspection")
    return code


if __name__ == "__main__":
    # os._exit: skip interpreter finalization, which the Temporal client's Rust threads can
    # abort (temporalio sdk-python#300) after everything has passed.
    exit_code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
