"""MGN's state names, so a user who knows MGN's console reads snapship's without a glossary.

Pure enums: workflows import this module, so it must stay free of I/O.
"""

from __future__ import annotations

from enum import StrEnum


class LifeCycleState(StrEnum):
    DISCOVERED = "DISCOVERED"
    NOT_READY = "NOT_READY"
    READY_FOR_TEST = "READY_FOR_TEST"
    TESTING = "TESTING"
    READY_FOR_CUTOVER = "READY_FOR_CUTOVER"
    CUTTING_OVER = "CUTTING_OVER"
    CUTOVER = "CUTOVER"
    DISCONNECTED = "DISCONNECTED"
    STOPPED = "STOPPED"


class DataReplicationState(StrEnum):
    STOPPED = "STOPPED"
    INITIATING = "INITIATING"
    INITIAL_SYNC = "INITIAL_SYNC"
    BACKLOG = "BACKLOG"
    CREATING_SNAPSHOT = "CREATING_SNAPSHOT"
    CONTINUOUS = "CONTINUOUS"
    PAUSED = "PAUSED"
    RESCAN = "RESCAN"
    STALLED = "STALLED"
    DISCONNECTED = "DISCONNECTED"
    PENDING_SNAPSHOT_SHIPPING = "PENDING_SNAPSHOT_SHIPPING"
    SHIPPING_SNAPSHOT = "SHIPPING_SNAPSHOT"


class ReplicationType(StrEnum):
    SNAPSHOT_SHIPPING = "SNAPSHOT_SHIPPING"
    AGENT_BASED = "AGENT_BASED"

    @property
    def label(self) -> str:
        return "Snapshot shipping" if self is ReplicationType.SNAPSHOT_SHIPPING else "Agent based"


# Lifecycle steps as MGN's console shows them for an agentless server.
LIFECYCLE_STEPS: tuple[tuple[str, tuple[LifeCycleState, ...]], ...] = (
    ("Not started", (LifeCycleState.DISCOVERED,)),
    ("Not ready", (LifeCycleState.NOT_READY,)),
    ("Ready for testing", (LifeCycleState.READY_FOR_TEST,)),
    ("Test in progress", (LifeCycleState.TESTING,)),
    ("Ready for cutover", (LifeCycleState.READY_FOR_CUTOVER,)),
    ("Cutover in progress", (LifeCycleState.CUTTING_OVER,)),
    ("Cutover complete", (LifeCycleState.CUTOVER,)),
)
