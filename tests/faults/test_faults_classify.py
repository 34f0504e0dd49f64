"""snapship.faults: each fault class is permanent or transient, and reads as one line."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from pyVmomi import vim, vmodl

from snapship.ebs.client import EbsCallError
from snapship.error_text import one_line, retry_line
from snapship.faults import VDDK_CONNECT_ATTEMPTS, classify
from snapship.vddk.binding import VddkError
from snapship.vddk.errors import VddkReaderDied, VddkReaderHung
from snapship.vsphere.errors import (
    CbtNotTracking,
    InvalidCredentials,
    MissingPrivileges,
    SnapshotRemovalInProgress,
    TaskFailed,
    TaskTimedOut,
    VcenterUnreachable,
)

REPR_MARKS = re.compile(r"\(vim\.|\(vmodl\.|<[A-Za-z_.]+ object at|Traceback|'msg'|\n")


def client_error(
    code: str, status: int, message: str = "m", op: str = "PutSnapshotBlock"
) -> Any:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        op,
    )


PERMANENT = [
    vmodl.fault.MethodNotFound(msg="Method QueryChangedDiskAreas not found",
                               method="QueryChangedDiskAreas"),
    vmodl.fault.NotSupported(msg="The operation is not supported on the object."),
    vim.fault.NoPermission(msg="Permission to perform this operation was denied.",
                           privilegeId="VirtualMachine.State.CreateSnapshot",
                           object=vim.VirtualMachine("vm-42")),
    vim.fault.InvalidLogin(msg="Cannot complete login due to an incorrect user name or password."),
    vmodl.fault.InvalidArgument(msg="A specified parameter was not correct: startOffset",
                                invalidProperty="startOffset"),
    vmodl.fault.ManagedObjectNotFound(msg="The object has already been deleted",
                                      obj=vim.VirtualMachine("vm-9")),
    InvalidCredentials("vc.example", "svc-snapship"),
    CbtNotTracking("vm-3", [2000, 2001]),
    MissingPrivileges("svc", {"vm-1": ["VirtualMachine.State.CreateSnapshot"]}),
    TaskFailed("Create snapshot", "NotSupported: no", "NotSupported",
               vmodl.fault.NotSupported(msg="no")),
    VddkError(3014, "Insufficient permissions in the host operating system",
              "VixDiskLib_ConnectEx"),
    VddkError(13003, "The snapshot was not found", "VixDiskLib_Open"),
    client_error("AccessDeniedException", 403, "User is not authorized: ebs:StartSnapshot"),
    client_error("ValidationException", 400, "Checksum is invalid"),
    client_error("UnauthorizedOperation", 403, "You are not authorized", "CreateTags"),
    EbsCallError("StartSnapshot", "AccessDeniedException", "denied"),
    TypeError('For "entity" expected type vim.ManagedEntity, but got str'),
]

TRANSIENT = [
    vim.fault.TaskInProgress(msg="The operation is not allowed in the current state.",
                             task=vim.Task("task-1")),
    vim.fault.NotAuthenticated(msg="The session is not authenticated."),
    vmodl.fault.SystemError(msg="A general system error occurred: socket closed",
                            reason="socket closed"),
    vmodl.fault.HostCommunication(msg="An error occurred communicating with the remote host."),
    TaskFailed("Remove snapshot", "TaskInProgress: busy", "TaskInProgress",
               vim.fault.TaskInProgress(msg="busy")),
    TaskTimedOut("Create snapshot", 600, "task-7"),
    VcenterUnreachable("vc.example", 443, "connection refused"),
    SnapshotRemovalInProgress("vm-1", "RemoveSnapshot_Task running"),
    VddkError(14011, "The network connection to the host was lost", "VixDiskLib_Read"),
    VddkError(14008, "Cannot connect to the host", "VixDiskLib_ConnectEx"),
    client_error("ThrottlingException", 400, "Rate exceeded"),
    client_error("RequestLimitExceeded", 503, "Request limit exceeded.", "DescribeSnapshots"),
    client_error("InternalServerException", 500, "internal"),
    client_error("SomethingNew", 409, "conflict"),
    EndpointConnectionError(endpoint_url="https://ebs.eu-west-1.amazonaws.com"),
    ReadTimeoutError(endpoint_url="https://ebs.eu-west-1.amazonaws.com"),
    EbsCallError("PutSnapshotBlock", "ThrottlingException", "slow down", retryable=True),
    ConnectionResetError(104, "Connection reset by peer"),
]


@pytest.mark.parametrize("exc", PERMANENT, ids=lambda e: type(e).__name__)
def test_permanent_faults(exc: Exception) -> None:
    fault = classify(exc)
    assert fault.permanent, fault
    assert not REPR_MARKS.search(fault.message), fault.message
    assert fault.message.strip() == fault.message and fault.message


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient_faults(exc: Exception) -> None:
    fault = classify(exc)
    assert not fault.permanent, fault
    assert not REPR_MARKS.search(fault.message), fault.message


def test_method_not_found_names_the_method_and_the_fix() -> None:
    fault = classify(PERMANENT[0])
    assert "QueryChangedDiskAreas" in fault.message
    assert "vCenter Server" in fault.message
    assert fault.kind == "VcenterMethodNotFound"
    # pyvmomi's own str() of the same fault is the multi-line repr this module exists to avoid
    assert "\n" in str(PERMANENT[0])


def test_no_permission_names_privilege_and_object() -> None:
    fault = classify(PERMANENT[2])
    assert "VirtualMachine.State.CreateSnapshot on vm-42" in fault.message


def test_vddk_connect_failure_has_a_short_budget() -> None:
    fault = classify(VddkError(14008, "Cannot connect to the host", "VixDiskLib_ConnectEx"))
    assert fault.attempt_budget == VDDK_CONNECT_ATTEMPTS
    assert fault.message.startswith("VDDK error 14008: Cannot connect to the host")
    assert classify(VddkError(14011, "lost", "VixDiskLib_Read")).attempt_budget == 0


def test_a_dead_reader_process_reads_as_its_own_line_and_retries() -> None:
    died = VddkReaderDied("VDDK reader process 7 for disk [ds1] a/a.vmdk was killed by SIGKILL")
    fault = classify(died)
    assert fault.message == str(died) and not fault.permanent  # no "VddkReaderDied:" prefix
    assert not classify(VddkReaderHung("VDDK reader process 7 did not answer")).permanent


def test_vddk_asks_the_error_with_the_code_masked() -> None:
    # VDDK may put extra information in the high bits of a VixError
    assert VddkError((7 << 32) | 14011, "lost").transient
    assert not VddkError(3014, "perm").transient


def test_one_line_strips_reprs_and_newlines() -> None:
    text = "bad\n  thing (vim.fault.NoPermission) <Foo object at 0x7f00aa>\r\nend"
    assert one_line(text) == "bad thing end"
    assert len(one_line("x" * 1000)) == 400


def test_retry_line() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    line = retry_line(3, 10, "VDDK error 14008: Cannot connect to the host",
                      (now + timedelta(seconds=40)).isoformat(), now)
    assert line == (
        "retrying (attempt 3 of 10): VDDK error 14008: Cannot connect to the host; "
        "next try in 40 s"
    )
    assert retry_line(2, 0, "x", "", now) == "retrying (attempt 2): x"
    short = retry_line(2, 4, "VDDK error 14008: " + "y" * 200,
                       (now + timedelta(seconds=5)).isoformat(), now, limit=100)
    assert len(short) == 100 and short.endswith("…; next try in 5 s")
    # without a fresh clock (the workflow, for the Web UI): the time of the next try
    assert retry_line(2, 4, "x", (now + timedelta(seconds=5)).isoformat(), None) == (
        "retrying (attempt 2 of 4): x; next try at 12:00:05Z"
    )


def test_the_suite_check_catches_what_pyvmomi_prints() -> None:
    """The e2e harness rejects reprs in every status it polls; it must see pyvmomi's."""
    from tests.e2e.harness import NOT_FOR_PEOPLE

    assert NOT_FOR_PEOPLE.search(str(PERMANENT[0]))
    assert NOT_FOR_PEOPLE.search(repr(object()))
    assert not NOT_FOR_PEOPLE.search(classify(PERMANENT[0]).message)
