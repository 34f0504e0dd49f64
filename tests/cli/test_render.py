"""Console rendering on made-up rows: progress, lag, runs, per-disk bars, the watch view."""

from __future__ import annotations

import json

from snapship.cli.console import ServerRow, lifecycle_step, visibility_query
from snapship.cli.render import (
    bar,
    dashboard,
    human_duration,
    lag_seconds,
    progress_fraction,
    servers_json,
    servers_table,
    watch_lines,
)
from snapship.messages import DiskProgress, RunRecord, SourceServerStatus


def status(**kw: object) -> SourceServerStatus:
    base: dict[str, object] = dict(
        source_server_id="snapship-vc-vm1", vm_name="web-01", vcenter_host="vc.lab",
        replication_type="SNAPSHOT_SHIPPING", lifecycle_state="READY_FOR_TEST",
        data_replication_state="SHIPPING_SNAPSHOT", replicating=True, paused=False,
        eligible=True, eligibility_reasons=[], warnings=["Guest volume / has 1.0 GiB free"],
        tags={"wave": "1"},
        disks=[
            DiskProgress(2000, "Hard disk 1", 32 << 20, 64, 48, 24 << 20),
            DiskProgress(2001, "Hard disk 2", 16 << 20, 32, 0, 0, full_sync=True),
        ],
        last_group_id="g-r000002", last_group_time="2026-11-25T10:00:00+00:00",
        lag_seconds=3725.0, last_error="",
        runs=[RunRecord("r000001", "2026-11-25T09:00:00+00:00", "2026-11-25T09:01:00+00:00",
                        "SUCCEEDED", group_id="g-r000001", bytes_shipped=48 << 20),
              RunRecord("r000002", "2026-11-25T10:00:00+00:00")],
        notes=[], next_run_at="",
    )
    base.update(kw)
    return SourceServerStatus(**base)  # type: ignore[arg-type]


def row(st: SourceServerStatus | None, name: str = "web-01") -> ServerRow:
    return ServerRow("snapship-vc-vm1", name, "vc.lab", st.lifecycle_state if st else "DISCOVERED",
                     st.data_replication_state if st else "STOPPED", "SNAPSHOT_SHIPPING", st)


def test_progress_is_blocks_done_over_blocks_total_across_disks() -> None:
    assert progress_fraction(status()) == 48 / 96
    assert progress_fraction(status(disks=[])) is None
    assert progress_fraction(None) is None
    assert bar(0.5, 10) == "[#####.....]  50.0%"


def test_table_has_mgn_columns_and_values() -> None:
    text = servers_table([row(status())])
    header, line = text.splitlines()
    assert header.split()[:3] == ["NAME", "REPLICATION", "TYPE"]
    assert "Snapshot shipping" in line and "Ready for testing" in line
    assert "SHIPPING_SNAPSHOT" in line and "50%" in line and "1h02m" in line
    assert "g-r000002 (2026-11-25 10:00:00Z)" in line
    long_id = servers_table([row(status(last_group_id="snapship-vc-vm1/r000009-a1"))])
    assert " r000009-a1 (2026-11-25 10:00:00Z)" in long_id
    failing = servers_table([row(status(last_error="r000003: VM moved"), "db-01")])
    assert "r000003: VM moved" in failing


def test_json_is_machine_readable() -> None:
    data = json.loads(servers_json([row(status()), row(None, "new-vm")]))
    assert data[0]["progress"] == 0.5 and data[0]["lag_seconds"] == 3725.0
    assert data[1]["lifecycle_step"] == "Not started" and data[1]["status"] is None


def test_dashboard_shows_steps_box_disks_and_runs() -> None:
    text = dashboard(row(status()))
    assert "[x] Not started" in text and "[x] Not ready" in text
    assert "[>] Ready for testing" in text and "[ ] Cutover complete" in text
    assert "| Replication type: Snapshot shipping" in text
    assert "Hard disk 1" in text and "48/64 blocks" in text and "(full sync)" in text
    assert "r000001" in text and "SUCCEEDED" in text and "running" in text
    assert "! Guest volume / has 1.0 GiB free" in text


def test_watch_lines_one_line_per_server() -> None:
    lines = watch_lines([row(status()), row(None, "app-01")]).splitlines()
    assert len(lines) == 2
    assert "50.0%" in lines[0] and "lag 1h02m" in lines[0]
    assert lines[1].startswith("app-01") and "Not started" in lines[1]


def test_lag_falls_back_to_age_of_last_group_while_replicating() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 25, 10, 5, tzinfo=UTC)
    assert lag_seconds(status(lag_seconds=None), now) == 300.0
    assert lag_seconds(status(lag_seconds=None, replicating=False), now) is None
    assert lag_seconds(status(lag_seconds=None, last_group_time=""), now) is None
    assert lag_seconds(status(lag_seconds=12.0), now) == 12.0


def test_small_helpers() -> None:
    assert human_duration(None) == "-" and human_duration(59) == "59s"
    assert human_duration(3 * 86400 + 7200) == "3d02h"
    assert lifecycle_step("DISCOVERED") == "Not started"
    assert lifecycle_step("CUTOVER") == "Cutover complete"
    q = visibility_query("discovered", 'vc"1')
    assert 'SnapshipVcenterHost="vc\\"1"' in q
    assert 'SnapshipLifeCycleState="DISCOVERED" AND SnapshipDataReplicationState="STOPPED"' in q
    assert 'ExecutionStatus="Running"' in q
    archived = visibility_query("archived")
    assert 'ExecutionStatus="Completed"' in archived and "Running" not in archived
    active = visibility_query("active")
    assert '(SnapshipLifeCycleState!="DISCOVERED" OR SnapshipDataReplicationState!="STOPPED")' \
        in active
