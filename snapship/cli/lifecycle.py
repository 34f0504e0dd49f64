"""`snapship test|cutover|mark-ready|revert-test|revert-cutover|finalize|terminate|disconnect|
archive|launch-settings` and `snapship jobs`: the lifecycle after Ready for testing.

Each command is the same Update the README shows for the `temporal` CLI; test and cutover over a
selection run as one job. Every refusal prints the server's reason on one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from typing import Any

from snapship.cli import console
from snapship.cli.lifecycle_client import (
    LAUNCH_JOB_WORKFLOW,
    SINGLE_COMMANDS,
    ServerOutcome,
    job_state,
    send_lifecycle,
    start_launch_job,
    wait_job,
)
from snapship.config import ClientConfig
from snapship.launch.messages import (
    InitiatedBy,
    LaunchJobState,
    LaunchRecord,
    LaunchRequest,
    LaunchSettings,
    LifecycleCommand,
    VolumeSettings,
)
from snapship.messages import SourceServerStatus

JOB_COMMANDS = {"test": InitiatedBy.START_TEST, "cutover": InitiatedBy.START_CUTOVER}
COMMANDS = {*JOB_COMMANDS, *SINGLE_COMMANDS, "launch-settings", "jobs"}
HELP = {
    "test": "launch test instances from the newest snapshot group (one job)",
    "cutover": "stop the source, final sync, launch cutover instances (one job)",
    "mark-ready": "mark tested servers ready for cutover",
    "revert-test": "revert to ready for testing",
    "revert-cutover": "terminate the cutover instance, power the source on again",
    "finalize": "finalize the cutover: replication stops, nothing left on the VM",
    "terminate": "terminate the instances snapship launched for the servers",
    "disconnect": "stop replication at once and disconnect the servers",
    "archive": "archive cutover or disconnected servers",
}

Connect = Callable[[ClientConfig], Awaitable[Any]]


def add_arguments(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    for name, text in HELP.items():
        p = sub.add_parser(name, help=text)
        p.add_argument("names", nargs="+", metavar="NAME|GLOB")
        if name == "cutover":
            p.add_argument("--no-final-sync", action="store_true",
                           help="launch from the newest group as it is; the source keeps running")
            p.add_argument("--stop-mode", default="shutdown",
                           choices=["shutdown", "power-off", "leave-running"],
                           help="how the source stops before the final sync (default: guest "
                                "shutdown through VMware Tools, power-off without Tools)")
        if name in JOB_COMMANDS:
            p.add_argument("--wait", action="store_true", help="wait for the job to end")
        if name == "mark-ready":
            p.add_argument("--terminate-test-instances", action="store_true")
        add_common(p)
    p = sub.add_parser("launch-settings", help="show or change a server's launch settings")
    p.add_argument("names", nargs="+", metavar="NAME|GLOB")
    p.add_argument("--instance-type")
    p.add_argument("--right-sizing", choices=["NONE", "BASIC"])
    p.add_argument("--subnet")
    p.add_argument("--security-group", action="append", metavar="SG_ID")
    p.add_argument("--disposition", choices=["STARTED", "STOPPED"])
    p.add_argument("--boot-mode", choices=["USE_SOURCE", "LEGACY_BIOS", "UEFI"])
    p.add_argument("--volume-type", help="default volume type (gp3)")
    p.add_argument("--disk-volume", action="append", metavar="KEY=TYPE[:IOPS[:THROUGHPUT]]",
                   help="volume type of one disk by device key, e.g. 2001=io2:4000")
    p.add_argument("--encrypted", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--kms-key")
    p.add_argument("--copy-tags", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--copy-private-ip", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--private-ip")
    add_common(p)
    p = sub.add_parser("jobs", help="list launch jobs, or `jobs show JOB_ID` with its log")
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("job_id", nargs="?")
    p.add_argument("--json", action="store_true")
    add_common(p)


async def run(args: argparse.Namespace, cfg: ClientConfig, connect: Connect) -> int:
    client = await connect(cfg)
    if args.command == "jobs":
        return await _jobs(client, args)
    selection = await console.select(client, console.VIEW_ALL, names=args.names,
                                     with_status=args.command == "launch-settings")
    for pattern in selection.unmatched:
        print(f"{pattern}: no source server matches", file=sys.stderr)
    if not selection.rows:
        return 1
    names = {r.workflow_id: r.vm_name for r in selection.rows}
    if args.command in JOB_COMMANDS:
        req = LaunchRequest(final_sync=not getattr(args, "no_final_sync", False),
                            stop_mode=getattr(args, "stop_mode", "shutdown"))
        started = await start_launch_job(client, cfg.temporal.control_task_queue,
                                         JOB_COMMANDS[args.command], list(names), req)
        _print_outcomes(started.outcomes, names)
        print(f"job {started.job_id}  (snapship jobs show {started.job_id})")
        if args.wait:
            state = await wait_job(client, started.job_id)
            print(job_text(state, names))
            return 0 if all(s.launch_status == "LAUNCHED" for s in state.servers) else 3
        return 0 if all(o.accepted for o in started.outcomes) else 3
    if args.command == "launch-settings":
        return await _launch_settings(client, args, selection.rows)
    cmd = LifecycleCommand(terminate_test_instances=getattr(args, "terminate_test_instances",
                                                            False))
    outcomes = [await send_lifecycle(client, wid, args.command, cmd) for wid in names]
    _print_outcomes(outcomes, names)
    return 0 if all(o.accepted for o in outcomes) else 3


def _print_outcomes(outcomes: list[ServerOutcome], names: dict[str, str]) -> None:
    for o in outcomes:
        mark = "ok  " if o.accepted else "REFUSED"
        print(f"{names.get(o.workflow_id, o.workflow_id)}: {mark} {o.message}")


def _disk_volume(text: str) -> VolumeSettings:
    key, _, spec = text.partition("=")
    parts = spec.split(":")
    try:
        return VolumeSettings(
            int(key), parts[0] or "gp3",
            int(parts[1]) if len(parts) > 1 and parts[1] else None,
            int(parts[2]) if len(parts) > 2 and parts[2] else None,
        )
    except ValueError:
        raise SystemExit(f"--disk-volume {text!r}: use KEY=TYPE[:IOPS[:THROUGHPUT]]") from None


def merged_settings(current: LaunchSettings, args: argparse.Namespace) -> LaunchSettings:
    """The current settings with what the command line changes."""
    changes: dict[str, Any] = {}
    for arg, field_name in (
        ("instance_type", "instance_type"), ("right_sizing", "right_sizing"),
        ("subnet", "subnet_id"), ("disposition", "launch_disposition"),
        ("boot_mode", "boot_mode"), ("volume_type", "volume_type"),
        ("encrypted", "encrypted"), ("kms_key", "kms_key_id"), ("copy_tags", "copy_tags"),
        ("copy_private_ip", "copy_private_ip"), ("private_ip", "private_ip"),
    ):
        value = getattr(args, arg, None)
        if value is not None:
            changes[field_name] = value
    if args.security_group:
        changes["security_group_ids"] = list(args.security_group)
    if args.disk_volume:
        by_key = {v.device_key: v for v in current.volumes}
        for v in map(_disk_volume, args.disk_volume):
            by_key[v.device_key] = v
        changes["volumes"] = sorted(by_key.values(), key=lambda v: v.device_key)
    return replace(current, **changes)


async def _launch_settings(client: Any, args: argparse.Namespace, rows: list[Any]) -> int:
    code = 0
    for row in rows:
        status: SourceServerStatus | None = row.status
        current = status.launch.settings if status and status.launch else LaunchSettings()
        wanted = merged_settings(current, args)
        if wanted == current:
            print(f"{row.vm_name}:\n{settings_text(current)}")
            continue
        outcome = await send_lifecycle(client, row.workflow_id, "update_launch_settings", wanted)
        _print_outcomes([outcome], {row.workflow_id: row.vm_name})
        code = code or (0 if outcome.accepted else 3)
    return code


# ---------------------------------------------------------------- text


def settings_text(s: LaunchSettings) -> str:
    vols = ", ".join(
        f"{v.device_key}={v.volume_type}"
        + (f" {v.iops} IOPS" if v.iops else "") + (f" {v.throughput} MiB/s" if v.throughput else "")
        for v in s.volumes
    )
    lines = [
        f"  Instance type    {s.instance_type} (right-sizing {s.right_sizing})",
        f"  Subnet           {s.subnet_id or 'default'}",
        f"  Security groups  {', '.join(s.security_group_ids) or 'default'}",
        f"  Disposition      {s.launch_disposition}   Boot mode {s.boot_mode}",
        f"  Volumes          {s.volume_type}{'; ' + vols if vols else ''}",
        f"  Encryption       {'on' if s.encrypted else 'off'}"
        + (f" (KMS key {s.kms_key_id})" if s.kms_key_id else ""),
        f"  Copy tags        {'yes' if s.copy_tags else 'no'}   Copy private IP "
        f"{'yes' if s.copy_private_ip else 'no'}",
    ]
    return "\n".join(lines)


def _record_line(label: str, r: LaunchRecord | None) -> str:
    if r is None:
        return f"  {label:<13}-"
    parts = [f"job {r.job_id}", f"initiated {r.initiated_at[:19]}", r.launch_status or "-"]
    if r.instance_id:
        parts.append(f"instance {r.instance_id}")
    if r.downtime_seconds is not None:
        parts.append(f"downtime {r.downtime_seconds:.0f}s")
    if r.reverted_at:
        parts.append(f"reverted {r.reverted_at[:19]}")
    if r.finalized_at:
        parts.append(f"finalized {r.finalized_at[:19]}")
    if r.error:
        parts.append(f"error: {r.error}")
    return f"  {label:<13}" + ", ".join(parts)


def launch_text(s: SourceServerStatus) -> str:
    """The launch part of `servers show`: group snapshots, settings, last test and cutover."""
    out = ["", "Launch"]
    out.append("  Snapshots    " + (", ".join(s.group_snapshot_ids) or "-")
               + (f"  (group {s.last_group_id})" if s.last_group_id else ""))
    ls = s.launch
    if ls is None:
        return "\n".join(out)
    out.append(_record_line("Last test", ls.last_test))
    out.append(_record_line("Last cutover", ls.last_cutover))
    if ls.job_in_progress:
        out.append(f"  Job running  {ls.job_in_progress}")
    out.append("Launch settings")
    out.append(settings_text(ls.settings))
    return "\n".join(out)


def job_text(state: LaunchJobState, names: dict[str, str] | None = None) -> str:
    names = names or {}
    out = [f"Job {state.job_id}  {state.type} / {state.initiated_by}  {state.status}",
           f"  created {state.creation_time[:19]}  ended {state.end_time[:19] or '-'}", "Servers"]
    for s in state.servers:
        line = f"  {names.get(s.source_server_id, s.source_server_id)}  {s.launch_status}"
        if s.instance_id:
            line += f"  {s.instance_id}"
        if s.error:
            line += f"  {s.error}"
        out.append(line)
    out.append("Log")
    for e in state.log:
        line = f"  {e.time[:19]}  {e.event}"
        if e.source_server_id:
            line += f"  {names.get(e.source_server_id, e.source_server_id)}"
        if e.detail:
            line += f"  {e.detail}"
        if e.error:
            line += f"  {e.error}"
        out.append(line)
    return "\n".join(out)


async def _jobs(client: Any, args: argparse.Namespace) -> int:
    if args.action == "show":
        if not args.job_id:
            print("Say which job: snapship jobs show JOB_ID", file=sys.stderr)
            return 2
        try:
            state = await job_state(client, args.job_id)
        except Exception as exc:  # RPCError: not found
            print(f"job {args.job_id}: {getattr(exc, 'message', exc)}", file=sys.stderr)
            return 1
        print(json.dumps(asdict(state), indent=2) if args.json else job_text(state))
        return 0
    rows = []
    async for ex in client.list_workflows(f'WorkflowType="{LAUNCH_JOB_WORKFLOW}"'):
        rows.append((ex.start_time.isoformat()[:19] if ex.start_time else "", ex.id,
                     ex.status.name if ex.status else ""))
    if args.json:
        print(json.dumps([{"job_id": i, "started": t, "status": s} for t, i, s in rows], indent=2))
        return 0
    if not rows:
        print("No launch jobs yet. `snapship test NAME` starts one.")
        return 0
    for t, i, s in sorted(rows, reverse=True):
        print(f"{t}  {i}  {s}")
    return 0
