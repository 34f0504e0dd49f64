"""Plain-text rendering of the console: tables, progress bars and the migration dashboard.

Kept free of Temporal so the layout can be tested on made-up rows.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from snapship.cli.console import ServerRow, lifecycle_step
from snapship.error_text import retry_line
from snapship.messages import DiskProgress, SourceServerStatus
from snapship.states import LIFECYCLE_STEPS, ReplicationType

COLUMNS = (
    "NAME",
    "REPLICATION TYPE",
    "LIFECYCLE",
    "DATA REPLICATION",
    "PROGRESS",
    "LAG",
    "LAST SNAPSHOT GROUP",
    "ERROR",
)


ERROR_WIDTH = 100  # room for a retry line: attempt, the reason's start and the next try


def replication_type_label(value: str) -> str:
    try:
        return ReplicationType(value).label
    except ValueError:
        return value or ReplicationType.SNAPSHOT_SHIPPING.label


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d{(seconds % 86400) // 3600:02d}h"


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def disk_fraction(disk: DiskProgress) -> float | None:
    if disk.blocks_total > 0:
        return min(1.0, disk.blocks_done / disk.blocks_total)
    return None


def progress_fraction(status: SourceServerStatus | None) -> float | None:
    """Share of this run's blocks shipped across all disks; None when no run is in flight."""
    if status is None or not status.disks:
        return None
    total = sum(d.blocks_total for d in status.disks)
    if total <= 0:
        return None
    return min(1.0, sum(d.blocks_done for d in status.disks) / total)


def bar(fraction: float | None, width: int = 24) -> str:
    if fraction is None:
        return "[" + " " * width + "]"
    filled = round(fraction * width)
    return "[" + "#" * filled + "." * (width - filled) + f"] {fraction * 100:5.1f}%"


def _progress_cell(row: ServerRow) -> str:
    fraction = progress_fraction(row.status)
    if fraction is None:
        return "-"
    return f"{fraction * 100:.0f}%"


def _group_cell(status: SourceServerStatus | None, short: bool = False) -> str:
    """The last complete group; `short` keeps only its run part (ids embed the server id)."""
    if status is None or not status.last_group_id:
        return "-"
    group = status.last_group_id.rsplit("/", 1)[-1] if short else status.last_group_id
    when = _short_time(status.last_group_time)
    return f"{group} ({when})" if when else group


def lag_seconds(status: SourceServerStatus | None, now: datetime | None = None) -> float | None:
    """MGN's lag: how old the newest consistent point is, while replication runs."""
    if status is None:
        return None
    if status.lag_seconds is not None:
        return status.lag_seconds
    if not status.replicating or not status.last_group_time:
        return None
    try:
        point = datetime.fromisoformat(status.last_group_time.replace("Z", "+00:00"))
    except ValueError:
        return None
    if point.tzinfo is None:
        point = point.replace(tzinfo=UTC)
    return max(0.0, ((now or datetime.now(UTC)) - point).total_seconds())


def _short_time(iso: str) -> str:
    if not iso:
        return ""
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _error_cell(row: ServerRow) -> str:
    if row.query_error:
        return row.query_error
    status = row.status
    if status is None:
        return ""
    if status.vanished:
        return "VM no longer in vCenter"
    if status.retry is not None:
        return _retry_text(status, ERROR_WIDTH)
    if status.waiting_for:
        return status.waiting_for
    if status.last_error:
        return status.last_error
    if not status.eligible and status.eligibility_reasons:
        return "Not eligible: " + "; ".join(status.eligibility_reasons)
    return ""


def _retry_text(status: SourceServerStatus, limit: int = 400) -> str:
    r = status.retry
    assert r is not None
    return retry_line(
        r.next_attempt, r.max_attempts, r.message, r.next_try_at, datetime.now(UTC), limit
    )


def row_cells(row: ServerRow) -> list[str]:
    status = row.status
    return [
        row.vm_name,
        replication_type_label(status.replication_type if status else row.replication_type),
        row.lifecycle_step,
        row.data_replication_state or "-",
        _progress_cell(row),
        human_duration(lag_seconds(status)),
        _group_cell(status, short=True),
        _truncate(_error_cell(row), ERROR_WIDTH),
    ]


def _truncate(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for cells in rows:
        for i, cell in enumerate(cells):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for cells in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    return "\n".join(lines)


def servers_table(rows: Sequence[ServerRow]) -> str:
    return table(COLUMNS, [row_cells(r) for r in rows])


def to_jsonable(row: ServerRow) -> dict[str, Any]:
    return {
        "source_server_id": row.workflow_id,
        "name": row.vm_name,
        "vcenter_host": row.vcenter_host,
        "replication_type": row.status.replication_type if row.status else row.replication_type,
        "lifecycle_state": row.lifecycle_state,
        "lifecycle_step": row.lifecycle_step,
        "data_replication_state": row.data_replication_state,
        "progress": progress_fraction(row.status),
        "lag_seconds": lag_seconds(row.status),
        "last_group_id": row.status.last_group_id if row.status else "",
        "error": _error_cell(row),
        "status": dataclasses.asdict(row.status) if row.status else None,
    }


def servers_json(rows: Sequence[ServerRow]) -> str:
    return json.dumps([to_jsonable(r) for r in rows], indent=2, sort_keys=True)


def lifecycle_line(state: str) -> str:
    """MGN's migration dashboard steps, done ones checked, the current one marked."""
    current = lifecycle_step(state)
    labels = [label for label, _ in LIFECYCLE_STEPS]
    index = labels.index(current) if current in labels else -1
    parts = []
    for i, label in enumerate(labels):
        mark = "x" if i < index else (">" if i == index else " ")
        parts.append(f"[{mark}] {label}")
    return "  ".join(parts)


def dashboard(row: ServerRow) -> str:
    """`snapship servers show`: the server's migration dashboard."""
    s = row.status
    out: list[str] = []
    out.append(f"Source server  {row.vm_name}")
    out.append(f"  id           {row.workflow_id}")
    out.append(f"  vCenter      {row.vcenter_host or (s.vcenter_host if s else '-')}")
    if row.query_error:
        out.append(f"  status       unavailable: {row.query_error}")
    out.append("")
    out.append("Migration dashboard")
    out.append("  Lifecycle    " + lifecycle_line(row.lifecycle_state))
    out.append(f"  State        {row.lifecycle_state or '-'}")
    out.append("")
    box: list[str] = []
    rtype = replication_type_label(s.replication_type if s else row.replication_type)
    box.append(f"Replication type: {rtype}")
    box.append(f"Data replication state: {row.data_replication_state or '-'}")
    if s is not None:
        if s.paused:
            box.append("Replication is paused")
        box.append(f"Replication progress: {bar(progress_fraction(s), 30)}")
        box.append(f"Lag: {human_duration(lag_seconds(s))}")
        box.append(f"Last snapshot group: {_group_cell(s)}")
        if s.next_run_at:
            box.append(f"Next run: {_short_time(s.next_run_at)}")
        if s.retry is not None:
            box.append(f"Now: {_retry_text(s)}")
        if s.last_error:
            box.append(f"Last error: {s.last_error}")
    width = max(len(b) for b in box) + 2
    out.append("Data replication status")
    out.append("  +" + "-" * width + "+")
    for b in box:
        out.append("  | " + b.ljust(width - 1) + "|")
    out.append("  +" + "-" * width + "+")
    if s is None:
        return "\n".join(out)
    if s.disks:
        out.append("")
        out.append("Disks")
        for d in s.disks:
            label = d.label or f"disk {d.device_key}"
            kind = "full sync" if d.full_sync else "changed blocks"
            out.append(
                f"  {label:<14} {human_bytes(d.total_bytes):>10}  {bar(disk_fraction(d))}  "
                f"{d.blocks_done}/{d.blocks_total} blocks, {human_bytes(d.bytes_shipped)} "
                f"shipped ({kind}){'  ' + d.note if d.note else ''}"
            )
    out.append("")
    out.append("Eligibility")
    out.append(f"  {'eligible' if s.eligible else 'NOT eligible'}")
    for reason in s.eligibility_reasons:
        out.append(f"  - {reason}")
    for warning in s.warnings:
        out.append(f"  ! {warning}")
    if s.vanished:
        out.append("  ! the VM is no longer in vCenter's inventory")
    from snapship.cli.lifecycle import launch_text

    out.append(launch_text(s))
    if s.tags:
        out.append("")
        out.append("Tags  " + "  ".join(f"{k}={v}" for k, v in sorted(s.tags.items())))
    if s.facts is not None:
        f = s.facts
        out.append("")
        out.append("VM")
        out.append(
            f"  {f.guest_full_name or f.guest_id or '-'}, {f.num_cpu} vCPU, {f.memory_mb} MiB, "
            f"{f.firmware}, {f.hardware_version}, {f.power_state}, host {f.host_name or f.host}"
        )
    if s.runs:
        out.append("")
        out.append("Recent runs")
        run_rows = [
            [
                r.run_id,
                _short_time(r.started_at),
                _short_time(r.finished_at) or "running",
                r.outcome or "-",
                r.group_id or "-",
                human_bytes(r.bytes_shipped),
                _truncate(r.reason, 50),
            ]
            for r in s.runs[-10:]
        ]
        table_text = table(
            ("RUN", "STARTED", "FINISHED", "OUTCOME", "GROUP", "SHIPPED", "REASON"), run_rows
        )
        out.extend("  " + line for line in table_text.splitlines())
    if s.notes:
        out.append("")
        out.append("Notes")
        out.extend(f"  - {n}" for n in s.notes[-10:])
    return "\n".join(out)


def watch_lines(rows: Sequence[ServerRow]) -> str:
    """One progress line per server for `--watch`."""
    width = max((len(r.vm_name) for r in rows), default=4)
    lines = []
    for r in rows:
        fraction = progress_fraction(r.status)
        lag = human_duration(lag_seconds(r.status))
        tail = _truncate(_error_cell(r), 50)
        lines.append(
            f"{r.vm_name.ljust(width)}  {r.lifecycle_step:<18} "
            f"{(r.data_replication_state or '-'):<26} {bar(fraction)}  lag {lag:<7} {tail}"
        )
    return "\n".join(lines)
