"""Typed search attributes: they make Temporal's workflow list read like MGN's server list.

Kept in one place so the dev server registration, the workflows that set them and the console
that queries them can never disagree on a name or a type.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

LIFECYCLE_STATE = SearchAttributeKey.for_keyword("SnapshipLifeCycleState")
DATA_REPLICATION_STATE = SearchAttributeKey.for_keyword("SnapshipDataReplicationState")
REPLICATION_TYPE = SearchAttributeKey.for_keyword("SnapshipReplicationType")
VM_NAME = SearchAttributeKey.for_keyword("SnapshipVmName")
VCENTER_HOST = SearchAttributeKey.for_keyword("SnapshipVcenterHost")

ALL_KEYS = (LIFECYCLE_STATE, DATA_REPLICATION_STATE, REPLICATION_TYPE, VM_NAME, VCENTER_HOST)


def dev_server_flags() -> list[str]:
    """`--search-attribute NAME=Type` pairs for `temporal server start-dev`."""
    flags: list[str] = []
    for key in ALL_KEYS:
        flags += ["--search-attribute", f"{key.name}=Keyword"]
    return flags
