"""Killing the worker at chosen points: a respawnable worker process and waits on the server's
view of pending activities (attempt and state), so a test acts on observed progress, not time."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import WorkflowHandle

from snapship.config import ClientConfig
from tests.e2e.harness import spawn_worker


@dataclass
class WorkerProcess:
    """The real worker as a child process that a test SIGKILLs and starts again."""

    config: ClientConfig
    state_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    kills: list[float] = field(default_factory=list)
    _starts_before: int = 0
    _up: bool = False

    def start(self) -> None:
        self._starts_before, self._up = self.starts(), False
        self.proc = spawn_worker(self.config, self.state_dir, self.log)

    def kill(self) -> float:
        """SIGKILL (no cleanup of any kind runs) and wait for the process to be gone."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        at = time.monotonic()
        self.kills.append(at)
        return at

    def restart_after_kill(self) -> float:
        at = self.kill()
        self.start()
        return at

    @property
    def identity(self) -> str:
        """The Temporal worker identity of the running process (the SDK's pid@host)."""
        assert self.proc is not None
        return f"{self.proc.pid}@{socket.gethostname()}"

    def starts(self) -> int:
        """How many times a process of this worker logged that it runs (the log is appended)."""
        if not self.log.exists():
            return 0
        return self.log.read_text(errors="replace").count("worker running")

    def running(self) -> bool:
        """Alive, and the current process logged that it runs (its pollers start right after
        that line): a respawned worker is not counted on before it can take tasks."""
        if not self.alive():
            return False
        if not self._up:
            self._up = self.starts() > self._starts_before
        return self._up

    async def wait_running(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.running():
            assert self.alive(), self.tail()
            assert time.monotonic() < deadline, f"the worker did not start: {self.tail()}"
            await asyncio.sleep(0.1)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass(frozen=True)
class Pending:
    activity: str
    attempt: int
    started: bool
    worker: str = ""


async def pending(handle: WorkflowHandle) -> dict[str, Pending]:
    """The workflow's pending activities by type, as the Temporal server sees them."""
    desc = await handle.describe()
    out: dict[str, Pending] = {}
    for a in desc.raw_description.pending_activities:
        out[a.activity_type.name] = Pending(
            a.activity_type.name,
            a.attempt,
            a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED,
            a.last_worker_identity,
        )
    return out


async def wait_started(
    handle: WorkflowHandle, activity: str, worker: WorkerProcess, timeout: float = 120
) -> Pending:
    """Until an attempt of `activity` is running on a worker."""
    deadline = time.monotonic() + timeout
    while True:
        p = (await pending(handle)).get(activity)
        if p is not None and p.started:
            return p
        assert worker.alive(), worker.tail()
        assert time.monotonic() < deadline, f"{activity} never started; {worker.tail()}"
        await asyncio.sleep(0.1)


async def wait_retried(
    handle: WorkflowHandle, killed: Pending, timeout: float = 120
) -> float:
    """Until a later attempt of the killed activity runs (or it finished, which only a later
    attempt can do once its worker is dead); returns when that was seen (monotonic)."""
    deadline = time.monotonic() + timeout
    while True:
        p = (await pending(handle)).get(killed.activity)
        if p is None or (p.attempt > killed.attempt and p.started):
            return time.monotonic()
        assert time.monotonic() < deadline, f"{killed.activity} was not retried: {p}"
        await asyncio.sleep(0.1)
