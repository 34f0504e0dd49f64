"""The permit rules on their own: caps, order, no overtaking, budget shares, blackout windows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from snapship.permit_messages import PermitLimits, PermitRequest, RunPriority
from snapship.permits import blackout_until, parse_window, plan_grants, shares


def req(
    key: str,
    at: str = "2026-12-01T10:00:00",
    prio: RunPriority = RunPriority.INCREMENTAL,
    host: str = "host-1",
    disks: list[str] | None = None,
    vm_mbps: int = 0,
) -> PermitRequest:
    return PermitRequest(
        holder_id=f"wf-{key}",
        request_key=key,
        vm_name=key,
        priority=int(prio),
        host=host,
        host_label=host.replace("host-", "esx-0"),
        disk_datastores=disks if disks is not None else ["ds1"],
        requested_at=at,
        vm_mbps=vm_mbps,
    )


def keys(plan_list: list[PermitRequest]) -> list[str]:
    return [r.request_key for r in plan_list]


def test_vcenter_cap_grants_oldest_first_and_says_why_others_wait() -> None:
    waiting = [req(f"vm{i}", at=f"2026-12-01T10:00:{59 - i:02d}") for i in range(8)]
    plan = plan_grants(PermitLimits(vcenter_vms=3, host_disks=0), [], waiting)
    assert keys(plan.grant) == ["vm7", "vm6", "vm5"]
    assert plan.waiting_for["vm0"] == "waiting for a slot on vCenter: 3 of 3 VMs shipping"


def test_cutover_then_initial_then_incremental_regardless_of_age() -> None:
    waiting = [
        req("inc-old", at="2026-12-01T09:00:00"),
        req("init", at="2026-12-01T09:30:00", prio=RunPriority.INITIAL_SYNC),
        req("cut", at="2026-12-01T09:59:00", prio=RunPriority.CUTOVER_FINAL_SYNC),
    ]
    for cap, want in ((1, ["cut"]), (2, ["cut", "init"]), (3, ["cut", "init", "inc-old"])):
        assert keys(plan_grants(PermitLimits(vcenter_vms=cap), [], waiting).grant) == want


def test_host_disk_cap_counts_disks_and_names_the_host() -> None:
    holders = [req("a", disks=["ds1", "ds2"], host="host-3")]
    waiting = [req("b", host="host-3", disks=["ds1"]), req("c", host="host-4", disks=["ds1"])]
    plan = plan_grants(PermitLimits(vcenter_vms=10, host_disks=2), holders, waiting)
    assert keys(plan.grant) == ["c"]
    assert plan.waiting_for["b"] == "waiting for a slot on esx-03: 2 of 2 disks in use"


def test_blocked_request_is_not_overtaken_on_its_host_but_other_hosts_proceed() -> None:
    holders = [req("a", host="host-1", disks=["ds1"])]
    waiting = [
        req("big", at="2026-12-01T10:00:01", host="host-1", disks=["ds1", "ds2"]),
        req("small", at="2026-12-01T10:00:02", host="host-1", disks=["ds3"]),
        req("other", at="2026-12-01T10:00:03", host="host-2", disks=["ds4"]),
    ]
    plan = plan_grants(PermitLimits(vcenter_vms=10, host_disks=2), holders, waiting)
    assert keys(plan.grant) == ["other"]
    assert "earlier request" in plan.waiting_for["small"]


def test_vm_larger_than_a_cap_runs_alone_instead_of_never() -> None:
    plan = plan_grants(PermitLimits(host_disks=2), [], [req("huge", disks=["ds1"] * 5)])
    assert keys(plan.grant) == ["huge"]


def test_datastore_cap() -> None:
    holders = [req("a", host="host-1", disks=["ds1", "ds1"])]
    plan = plan_grants(
        PermitLimits(vcenter_vms=10, host_disks=0, datastore_disks=2),
        holders,
        [req("b", host="host-2", disks=["ds1"]), req("c", host="host-2", disks=["ds2"])],
    )
    assert keys(plan.grant) == ["c"]
    assert plan.waiting_for["b"] == (
        "waiting for a slot on datastore ds1: 2 of 2 disks under snapshot"
    )


def test_vcenter_cap_never_above_fifty() -> None:
    waiting = [req(f"vm{i:03d}", host=f"host-{i}") for i in range(60)]
    limits = PermitLimits(vcenter_vms=500, datastore_disks=0)
    assert len(plan_grants(limits, [], waiting).grant) == 50


def test_blackout_holds_everything() -> None:
    plan = plan_grants(PermitLimits(), [], [req("a")], blackout="blackout window")
    assert plan.grant == [] and plan.waiting_for["a"] == "blackout window"


def test_mbps_shares_water_fill_and_requests_split_evenly() -> None:
    holders = [req("a", vm_mbps=10), req("b"), req("c")]
    got = shares(PermitLimits(total_mbps=100, ebs_requests_per_second=900), holders)
    assert got["a"].mbps == 10
    assert got["b"].mbps == pytest.approx(45) and got["c"].mbps == pytest.approx(45)
    assert {s.requests_per_second for s in got.values()} == {300}
    unlimited = shares(PermitLimits(total_mbps=0, vm_mbps=0), holders)
    assert unlimited["b"].mbps == 0 and unlimited["a"].mbps == 10


def test_blackout_windows_across_midnight() -> None:
    at = datetime(2026, 12, 1, 23, 30, tzinfo=UTC)
    assert blackout_until(at, ["22:00-06:00"]) == datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
    assert blackout_until(at.replace(hour=7), ["22:00-06:00"]) is None
    early = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
    assert blackout_until(early, ["22:00-06:00"]) == datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        parse_window("8-18h")
