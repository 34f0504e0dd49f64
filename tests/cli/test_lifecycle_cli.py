"""Console side of the lifecycle: parsing, settings merge, and what `jobs show` / `servers show`
print (one line per refusal or error, no reprs)."""

from __future__ import annotations

from snapship.cli.app import build_parser
from snapship.cli.lifecycle import job_text, launch_text, merged_settings
from snapship.launch.messages import (
    JobLogEntry,
    LaunchJobState,
    LaunchRecord,
    LaunchSettings,
    ParticipatingServer,
    ServerLaunchState,
    VolumeSettings,
)
from snapship.messages import SourceServerStatus


def test_lifecycle_commands_parse() -> None:
    p = build_parser()
    a = p.parse_args(["cutover", "web-*", "--stop-mode", "power-off", "--wait"])
    assert (a.command, a.names, a.stop_mode, a.no_final_sync, a.wait) == (
        "cutover", ["web-*"], "power-off", False, True)
    a = p.parse_args(["mark-ready", "db-01", "--terminate-test-instances"])
    assert a.terminate_test_instances
    a = p.parse_args(["jobs", "show", "snapship-job-1"])
    assert (a.action, a.job_id) == ("show", "snapship-job-1")
    for cmd in ("test", "revert-test", "revert-cutover", "finalize", "terminate", "disconnect",
                "archive"):
        assert p.parse_args([cmd, "x"]).command == cmd


def test_launch_settings_merge_keeps_what_is_not_given() -> None:
    p = build_parser()
    current = LaunchSettings(subnet_id="subnet-1", volumes=[VolumeSettings(2000, "gp2")])
    args = p.parse_args(["launch-settings", "x", "--instance-type", "m5.large", "--right-sizing",
                         "NONE", "--disk-volume", "2001=io2:4000", "--encrypted"])
    got = merged_settings(current, args)
    assert got.instance_type == "m5.large" and got.right_sizing == "NONE"
    assert got.subnet_id == "subnet-1" and got.encrypted
    assert got.volumes == [VolumeSettings(2000, "gp2"), VolumeSettings(2001, "io2", 4000)]
    assert merged_settings(current, p.parse_args(["launch-settings", "x"])) == current


def test_job_text_shows_servers_and_log() -> None:
    state = LaunchJobState(
        "snapship-job-1", "LAUNCH", "START_TEST", "COMPLETED", "2026-12-01T20:00:00+00:00",
        "2026-12-01T20:01:00+00:00",
        servers=[ParticipatingServer("s1", "LAUNCHED", "i-1"),
                 ParticipatingServer("s2", "FAILED", error="RunInstances failed: "
                                     "InvalidSubnetID.NotFound: no subnet")],
        log=[JobLogEntry("JOB_START", "2026-12-01T20:00:00"),
             JobLogEntry("LAUNCH_FAILED", "2026-12-01T20:00:30", "s2", error="no subnet"),
             JobLogEntry("JOB_END", "2026-12-01T20:01:00")],
    )
    text = job_text(state, {"s1": "web-01", "s2": "web-02"})
    assert "web-01  LAUNCHED  i-1" in text
    assert "web-02  FAILED  RunInstances failed: InvalidSubnetID.NotFound" in text
    assert "LAUNCH_FAILED  web-02  no subnet" in text


def test_servers_show_lists_group_snapshots_and_last_launches() -> None:
    st = SourceServerStatus(
        "s1", "web-01", "vc", "SNAPSHOT_SHIPPING", "CUTTING_OVER", "CONTINUOUS", True, False,
        True, [], [], {}, [], "s1/r000003-a1", "", None, "", [], [], "",
        launch=ServerLaunchState(
            last_test=LaunchRecord("job-a", "2026-12-01T20:00:00", "i-1", "LAUNCHED",
                                   reverted_at="2026-12-01T20:10:00"),
            last_cutover=LaunchRecord("job-b", "2026-12-01T20:20:00", "i-2", "LAUNCHED",
                                      downtime_seconds=42.4),
        ),
        group_snapshot_ids=["snap-1", "snap-2"],
    )
    text = launch_text(st)
    assert "Snapshots    snap-1, snap-2  (group s1/r000003-a1)" in text
    assert "Last test    job job-a" in text and "reverted 2026-12-01T20:10:00" in text
    assert "instance i-2, downtime 42s" in text
    assert "Instance type    t3.medium (right-sizing BASIC)" in text
