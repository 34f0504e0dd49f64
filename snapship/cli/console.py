"""What the console shows, fetched from Temporal: one row per source-server workflow.

Why two sources: the workflow list (visibility, typed search attributes) is one cheap call for
thousands of servers and carries name, lifecycle and replication state; progress, lag, tags,
errors and runs need the workflow's "status" Query, one call per server. So the list narrows the
selection first and only the servers that survive are queried, a bounded number at a time.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.service import RPCError

from snapship import search_attributes as sa
from snapship.command_deadline import deadline_after
from snapship.messages import (
    CommandResult,
    ReplicationCommand,
    SourceServerStatus,
    StartReplicationRequest,
)
from snapship.states import LIFECYCLE_STEPS, DataReplicationState, LifeCycleState

SOURCE_SERVER_WORKFLOW = "SourceServerWorkflow"
QUERY_CONCURRENCY = 16
QUERY_TIMEOUT = timedelta(seconds=8)
LIST_STATUS_LIMIT = 500
# How long a command may wait for a worker to accept it; also its `not_after`, so a command
# not accepted in time is refused by the workflow later instead of applied.
ACCEPT_TIMEOUT = timedelta(seconds=8)
# How long the console then waits for an accepted command to finish (a stop waits for the
# running snapshot to be removed); past it the command still completes, the console just stops
# waiting.
UPDATE_TIMEOUT = timedelta(seconds=60)
RPC_TIMEOUT = timedelta(seconds=10)
READY_STATES = frozenset(
    {
        LifeCycleState.READY_FOR_TEST.value,
        LifeCycleState.TESTING.value,
        LifeCycleState.READY_FOR_CUTOVER.value,
        LifeCycleState.CUTTING_OVER.value,
        LifeCycleState.CUTOVER.value,
    }
)

VIEW_ACTIVE = "active"
VIEW_DISCOVERED = "discovered"
VIEW_ALL = "all"
# Archiving ends a server's workflow (MGN: archived servers leave the default views).
VIEW_ARCHIVED = "archived"


@dataclass
class ServerRow:
    """One source server as the console shows it; `status` is None when the query failed."""

    workflow_id: str
    vm_name: str
    vcenter_host: str
    lifecycle_state: str
    data_replication_state: str
    replication_type: str
    status: SourceServerStatus | None = None
    query_error: str = ""

    @property
    def tags(self) -> dict[str, str]:
        return dict(self.status.tags) if self.status else {}

    @property
    def lifecycle_step(self) -> str:
        return lifecycle_step(self.lifecycle_state)


@dataclass
class CommandOutcome:
    """What happened to one server when a command was sent to it."""

    workflow_id: str
    vm_name: str
    accepted: bool
    message: str
    lifecycle_state: str = ""
    data_replication_state: str = ""


@dataclass
class Selection:
    rows: list[ServerRow]
    unmatched: list[str] = field(default_factory=list)
    status_skipped: bool = False
    in_view: int = 0  # servers in the view before the filters


def lifecycle_step(state: str) -> str:
    for label, states in LIFECYCLE_STEPS:
        if state in {s.value for s in states}:
            return label
    return state.replace("_", " ").capitalize() if state else ""


def visibility_query(
    view: str = VIEW_ALL, vcenter_host: str = "", extra: Sequence[str] = ()
) -> str:
    """The list filter; `vcenter_host` keeps one client's servers apart from another's."""
    status = "Completed" if view == VIEW_ARCHIVED else "Running"
    parts = [f'WorkflowType="{SOURCE_SERVER_WORKFLOW}"', f'ExecutionStatus="{status}"']
    if vcenter_host:
        parts.append(f'{sa.VCENTER_HOST.name}="{_quote(vcenter_host)}"')
    # "Discovered" = never started (MGN's Discovered source servers filter); "active" = the rest,
    # including a server in its initial sync whose lifecycle still reads DISCOVERED.
    lcs = f'{sa.LIFECYCLE_STATE.name}="{LifeCycleState.DISCOVERED.value}"'
    drs = f'{sa.DATA_REPLICATION_STATE.name}="{DataReplicationState.STOPPED.value}"'
    if view == VIEW_DISCOVERED:
        parts.append(f"{lcs} AND {drs}")
    elif view == VIEW_ACTIVE:
        parts.append(f"({lcs.replace('=', '!=', 1)} OR {drs.replace('=', '!=', 1)})")
    parts.extend(extra)
    return " AND ".join(parts)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _attr(execution: Any, key: Any) -> str:
    try:
        value = execution.typed_search_attributes.get(key)
    except Exception:
        value = None
    return str(value) if value is not None else ""


async def list_rows(
    client: Client, view: str = VIEW_ALL, vcenter_host: str = "", extra: Sequence[str] = ()
) -> list[ServerRow]:
    """Every running source-server workflow in `view`, from visibility only (no queries)."""
    rows: list[ServerRow] = []
    async for execution in client.list_workflows(
        visibility_query(view, vcenter_host, extra), rpc_timeout=RPC_TIMEOUT
    ):
        rows.append(
            ServerRow(
                workflow_id=execution.id,
                vm_name=_attr(execution, sa.VM_NAME) or execution.id,
                vcenter_host=_attr(execution, sa.VCENTER_HOST),
                lifecycle_state=_attr(execution, sa.LIFECYCLE_STATE),
                data_replication_state=_attr(execution, sa.DATA_REPLICATION_STATE),
                replication_type=_attr(execution, sa.REPLICATION_TYPE) or "SNAPSHOT_SHIPPING",
            )
        )
    rows.sort(key=lambda r: (r.vm_name.lower(), r.workflow_id))
    return rows


async def query_status(client: Client, workflow_id: str) -> SourceServerStatus:
    handle = client.get_workflow_handle(workflow_id)
    result: SourceServerStatus = await handle.query(
        "status", result_type=SourceServerStatus, rpc_timeout=QUERY_TIMEOUT
    )
    return result


async def fill_status(client: Client, rows: Iterable[ServerRow]) -> None:
    """Query each row's status (bounded concurrency); the live answer overrides visibility."""
    gate = asyncio.Semaphore(QUERY_CONCURRENCY)

    async def one(row: ServerRow) -> None:
        async with gate:
            try:
                status = await query_status(client, row.workflow_id)
            except (TimeoutError, RPCError) as exc:
                row.query_error = _rpc_reason(exc)
                return
            except Exception as exc:
                row.query_error = f"{type(exc).__name__}: {exc}"
                return
            row.status = status
            row.vm_name = status.vm_name or row.vm_name
            row.lifecycle_state = status.lifecycle_state or row.lifecycle_state
            row.data_replication_state = (
                status.data_replication_state or row.data_replication_state
            )

    await asyncio.gather(*(one(r) for r in rows))


def _is_deadline(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or "deadline" in (str(exc) or "").lower()


def _rpc_reason(exc: BaseException) -> str:
    if _is_deadline(exc):
        return "no answer from the worker (is `snapship worker` running?)"
    lines = (str(exc) or type(exc).__name__).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _update_failure(exc: WorkflowUpdateFailedError) -> str:
    """The validator's reason (one line), not the failure's repr."""
    cause = exc.cause
    message = getattr(cause, "message", None) or str(cause or exc)
    lines = str(message).strip().splitlines()
    return lines[0] if lines else "the command was refused"


def parse_tag_filters(items: Iterable[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--tag {item!r} is not KEY=VALUE")
        key, value = item.split("=", 1)
        tags[key] = value
    return tags


def _matches_name(row: ServerRow, patterns: Sequence[str]) -> bool:
    return any(
        fnmatch.fnmatchcase(row.vm_name, p) or row.workflow_id == p for p in patterns
    )


def state_values(text: str) -> set[str]:
    """Enum values a `--state` names: an enum name ("READY_FOR_TEST", "initial_sync") or MGN's
    label ("Ready for testing", "Initial sync"). Raises ValueError naming the valid ones."""
    key = " ".join(text.replace("_", " ").split()).lower()
    found: set[str] = set()
    for label, lcs in LIFECYCLE_STEPS:
        if key == label.lower():
            found.update(s.value for s in lcs)
    for enum in (LifeCycleState, DataReplicationState):
        for member in enum:
            if key == member.value.replace("_", " ").lower():
                found.add(member.value)
    if not found:
        labels = [label for label, _ in LIFECYCLE_STEPS]
        raise ValueError(
            f"--state {text!r} is no lifecycle or data replication state; use an MGN label "
            f"({', '.join(repr(x) for x in labels)}) or a state name such as READY_FOR_TEST, "
            "INITIAL_SYNC, STALLED"
        )
    return found


def _matches_state(row: ServerRow, states: Sequence[str]) -> bool:
    wanted: set[str] = set()
    for text in states:
        wanted |= state_values(text)
    return row.lifecycle_state in wanted or row.data_replication_state in wanted


def _matches_tags(row: ServerRow, tags: dict[str, str]) -> bool:
    have = row.tags
    return all(have.get(k) == v for k, v in tags.items())


async def select(
    client: Client,
    view: str = VIEW_ALL,
    vcenter_host: str = "",
    names: Sequence[str] = (),
    states: Sequence[str] = (),
    tags: dict[str, str] | None = None,
    with_status: bool = True,
    status_limit: int | None = None,
    extra: Sequence[str] = (),
) -> Selection:
    """Rows matching every given filter. Name globs that matched nothing are reported.

    Live status costs one Query per server; above `status_limit` rows (and without a tag
    filter, which needs it) the list shows visibility's columns only, so listing 10,000
    servers stays one call.
    """
    for text in states:
        state_values(text)  # a bad --state fails before any query
    rows = await list_rows(client, view, vcenter_host, extra)
    in_view = len(rows)
    unmatched: list[str] = []
    if names:
        unmatched = [p for p in names if not any(_matches_name(r, [p]) for r in rows)]
        rows = [r for r in rows if _matches_name(r, names)]
    skipped = False
    if tags or (with_status and (status_limit is None or len(rows) <= status_limit)):
        await fill_status(client, rows)
    else:
        skipped = with_status
    if states:
        rows = [r for r in rows if _matches_state(r, states)]
    if tags:
        rows = [r for r in rows if _matches_tags(r, tags)]
    return Selection(rows=rows, unmatched=unmatched, status_skipped=skipped, in_view=in_view)


async def send_command(
    client: Client,
    row: ServerRow,
    command: str,
    interval_seconds: int | None = None,
    reason: str = "",
) -> CommandOutcome:
    """Send one Update; a validator's rejection comes back as a refused outcome with its reason."""
    handle = client.get_workflow_handle(row.workflow_id)
    name = {
        "start": "start_replication",
        "stop": "stop_replication",
        "pause": "pause_replication",
        "resume": "resume_replication",
        "run-now": "run_now",
    }[command]
    not_after = deadline_after(ACCEPT_TIMEOUT)
    arg: Any = (
        StartReplicationRequest(interval_seconds=interval_seconds, not_after=not_after)
        if command == "start"
        else ReplicationCommand(reason=reason, not_after=not_after)
    )
    try:
        update = await asyncio.wait_for(
            handle.start_update(
                name,
                arg,
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                result_type=CommandResult,
                rpc_timeout=ACCEPT_TIMEOUT,
            ),
            ACCEPT_TIMEOUT.total_seconds(),
        )
    except WorkflowUpdateFailedError as exc:
        return CommandOutcome(row.workflow_id, row.vm_name, False, _update_failure(exc))
    except (TimeoutError, RPCError, WorkflowUpdateRPCTimeoutOrCancelledError) as exc:
        if isinstance(exc, RPCError) and not _is_deadline(exc):
            return CommandOutcome(row.workflow_id, row.vm_name, False, _rpc_reason(exc))
        return CommandOutcome(
            row.workflow_id,
            row.vm_name,
            False,
            f"no worker took the command within {int(ACCEPT_TIMEOUT.total_seconds())} s; it "
            "expired and will not be applied later (is `snapship worker` running?)",
        )
    try:
        result: CommandResult = await asyncio.wait_for(
            update.result(rpc_timeout=UPDATE_TIMEOUT), UPDATE_TIMEOUT.total_seconds()
        )
    except WorkflowUpdateFailedError as exc:
        return CommandOutcome(row.workflow_id, row.vm_name, False, _update_failure(exc))
    except (TimeoutError, RPCError, WorkflowUpdateRPCTimeoutOrCancelledError):
        return CommandOutcome(
            row.workflow_id,
            row.vm_name,
            True,
            f"accepted; still finishing after {int(UPDATE_TIMEOUT.total_seconds())} s "
            "(see `snapship servers show`)",
        )
    return CommandOutcome(
        row.workflow_id,
        row.vm_name,
        result.accepted,
        result.message,
        result.lifecycle_state,
        result.data_replication_state,
    )


async def send_commands(
    client: Client,
    rows: Sequence[ServerRow],
    command: str,
    interval_seconds: int | None = None,
    reason: str = "",
) -> list[CommandOutcome]:
    gate = asyncio.Semaphore(QUERY_CONCURRENCY)

    async def one(row: ServerRow) -> CommandOutcome:
        async with gate:
            return await send_command(client, row, command, interval_seconds, reason)

    return list(await asyncio.gather(*(one(r) for r in rows)))


def is_ready(row: ServerRow) -> bool:
    return row.lifecycle_state in READY_STATES
