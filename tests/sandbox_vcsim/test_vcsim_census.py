"""The simulator's census of snapshots that exist at once (what the cap tests measure)."""

from __future__ import annotations

from sandbox.vcsim.census import SnapshotCensus


def test_census_counts_vms_and_disks_at_once_and_keeps_peaks() -> None:
    c = SnapshotCensus()
    c.created("snap-1", "vm-1", "esx1", ["ds1", "ds1"])
    c.created("snap-2", "vm-2", "esx1", ["ds2"])
    c.created("snap-3", "vm-1", "esx1", ["ds1", "ds1"])  # a second snapshot of vm-1
    r = c.report()
    assert r["vms_now"] == 2 and r["disks_per_host_now"] == {"esx1": 3}
    c.removed("snap-1")
    c.removed("snap-3")
    c.created("snap-4", "vm-3", "esx2", ["ds1"])
    r = c.report()
    assert r["vms_now"] == 2 and r["peak_vms"] == 2
    assert r["peak_disks_per_host"] == {"esx1": 3, "esx2": 1}
    assert r["peak_disks_per_datastore"] == {"ds1": 2, "ds2": 1}
    c.reset()
    r = c.report()
    assert r["peak_vms"] == 2 and r["peak_disks_per_host"] == {"esx1": 1, "esx2": 1}
    assert r["created_since_reset"] == 0
