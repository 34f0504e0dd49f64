"""Every fault classified once: permanent or transient, and one line a person can act on.

Activities raise whatever pyvmomi, VDDK or botocore raise. Deciding there, call by call, whether a
retry can help is how a vCenter without ``QueryChangedDiskAreas`` ended up retried for 20 minutes
while snapship's snapshot sat on the VM, with a multi-line pyvmomi repr as the final error. This
module is the one place that decides, for an exception of any origin:

- ``permanent``: retrying the same call with the same input cannot succeed (MethodNotFound,
  NotSupported, NoPermission, a login rejected after a re-login, invalid arguments, AccessDenied,
  ValidationException, a bug in snapship). The run fails at once and cleans up.
- transient: the far end may answer differently later (connections, session expiry,
  TaskInProgress, throttling, 5xx). Temporal keeps the retry budget; ``attempt_budget`` shortens
  it for faults that should not hold a run for long (a VDDK that cannot connect).
- ``message``: one line naming what failed and what to do — the vSphere fault's own ``msg``, never
  its repr (which spans many lines and may carry request context).

Pure library code: no Temporal here (``activities/fault_boundary.py`` applies it to activities).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pyVmomi import vim, vmodl

from snapship.ebs.client import EbsCallError, error_code, http_status, is_transient
from snapship.error_text import one_line
from snapship.vddk.binding import VddkError
from snapship.vddk.errors import VddkReaderError
from snapship.vsphere import errors as verr

VDDK_CONNECT_ATTEMPTS = 4
VDDK_CONNECT_RETRY_S = 5.0
"""A VDDK connect failure may be a blip but usually is a firewall or a wrong host: four attempts
5 s apart (about 20 s), then the run stalls with the reason instead of sitting in its state."""


@dataclass(frozen=True)
class Fault:
    """What a failed call means for the run."""

    message: str
    """One line, for a person: what failed and what to do."""
    permanent: bool
    kind: str
    """A short stable name (the ApplicationError type workflows and tests match on)."""
    attempt_budget: int = 0
    """For transient faults: give up after this many attempts of the activity (0: the policy's)."""
    retry_after_s: float = 0.0
    """For budgeted faults: the pause before the next attempt (0: the retry policy's backoff)."""


# ------------------------------------------------------------------ vSphere faults

PERMANENT_VSPHERE_FAULTS: tuple[type[Any], ...] = (
    vmodl.fault.MethodNotFound,
    vmodl.fault.NotSupported,
    vmodl.fault.NotImplemented,
    vmodl.fault.InvalidArgument,
    vmodl.fault.InvalidType,
    vmodl.fault.InvalidRequest,
    vmodl.fault.ManagedObjectNotFound,
    vmodl.fault.SecurityError,
    vim.fault.NoPermission,
    vim.fault.InvalidLogin,
    vim.fault.InvalidName,
    vim.fault.NotFound,
    vim.fault.AlreadyExists,
)
"""Faults a retry cannot cure. Everything else vCenter answers (TaskInProgress, HostCommunication,
Timedout, SystemError, InvalidState, NotAuthenticated after a failed re-login ...) is transient."""


def fault_name(fault: Any) -> str:
    return type(fault).__name__.rsplit(".", 1)[-1]


def vsphere_fault_text(fault: Any) -> str:
    """``Name: msg`` from a MethodFault's fields, never from its repr."""
    name = fault_name(fault)
    msg = str(getattr(fault, "msg", None) or "")
    if not msg:
        parts = [
            str(getattr(m, "message", "") or "") for m in getattr(fault, "faultMessage", ()) or ()
        ]
        msg = "; ".join(p for p in parts if p)
    return f"{name}: {one_line(msg)}" if msg else name


def _moref(obj: Any) -> str:
    return str(getattr(obj, "_moId", "") or "")


def _vsphere(fault: Any) -> Fault:
    name = fault_name(fault)
    text = vsphere_fault_text(fault)
    # NotAuthenticated is a NoPermission in vSphere's type tree, yet it means "session expired":
    # the session logs in again and a new attempt goes through.
    permanent = isinstance(fault, PERMANENT_VSPHERE_FAULTS) and not isinstance(
        fault, vim.fault.NotAuthenticated
    )
    if isinstance(fault, vmodl.fault.MethodNotFound):
        method = str(getattr(fault, "method", "") or "a method")
        message = (
            f"vCenter does not offer {method} ({text}); snapship needs vCenter Server 6.7, 7.0 "
            "or 8.0 with Changed Block Tracking: check that the endpoint is vCenter Server"
        )
    elif isinstance(fault, vim.fault.NoPermission) and permanent:
        privilege = str(getattr(fault, "privilegeId", "") or "a privilege")
        on = _moref(getattr(fault, "object", None))
        message = (
            f"vCenter denied {privilege}{' on ' + on if on else ''} ({text}); grant the snapship "
            "user a role with that privilege (propagate to children)"
        )
    elif isinstance(fault, vim.fault.InvalidLogin):
        message = (
            f"vCenter rejected the login ({text}); update the credentials with "
            "vcenter_configuration_update"
        )
    elif permanent:
        message = f"vCenter refused the request ({text})"
    else:
        message = f"vCenter answered {text}; retrying"
    return Fault(one_line(message), permanent, f"Vcenter{name}")


_PERMANENT_OWN_ERRORS: tuple[type[Exception], ...] = (
    verr.InvalidCredentials,
    verr.MissingPrivileges,
    verr.UnsupportedVcenter,
    verr.CaFileUnusable,
    verr.TlsVerificationFailed,
    verr.ObjectNotFound,
    verr.ForeignSnapshotsPresent,
    verr.VmMovedDuringRun,
    verr.CbtNotTracking,
)


def _own_vsphere(exc: verr.VsphereError) -> Fault:
    if isinstance(exc, verr.TaskFailed) and exc.fault is not None:
        inner = _vsphere(exc.fault)
        return Fault(one_line(str(exc)), inner.permanent, inner.kind)
    return Fault(one_line(str(exc)), isinstance(exc, _PERMANENT_OWN_ERRORS), type(exc).__name__)


# ------------------------------------------------------------------ VDDK

CONNECT_CALL = "VixDiskLib_ConnectEx"


def _vddk(exc: VddkError) -> Fault:
    text = f"VDDK error {exc.code}: {one_line(exc.text)}"
    if exc.call == CONNECT_CALL:
        # Unreachable host, refused port, thumbprint mismatch: often a firewall or a changed
        # certificate, sometimes a blip. A short budget, then the run stalls with the reason.
        return Fault(
            one_line(
                f"{text} (VDDK could not connect to vCenter/ESXi; check that this client reaches "
                "vCenter on TCP 443 and the ESXi hosts on TCP 902)"
            ),
            permanent=not exc.transient,
            kind="VddkConnectFailed",
            attempt_budget=VDDK_CONNECT_ATTEMPTS,
            retry_after_s=VDDK_CONNECT_RETRY_S,
        )
    where = f" in {exc.call}" if exc.call else ""
    return Fault(one_line(f"{text}{where}"), not exc.transient, "VddkError")


# ------------------------------------------------------------------ AWS

ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "AuthFailure",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "OptInRequired",
        "KMSKeyNotAccessibleFault",
        "KMS.DisabledException",
        "KMS.NotFoundException",
    }
)
"""The permanent answers an IAM policy, credentials or the Region explain: only these get that
hint (a refused write into a sealed snapshot was told to check the IAM policy)."""

PERMANENT_AWS_CODES = ACCESS_CODES | frozenset(
    {
        "ValidationException",
        "ValidationError",
        "InvalidParameter",
        "InvalidParameterValue",
        "InvalidParameterCombination",
        "MissingParameter",
        "UnsupportedOperation",
        "InvalidSnapshot.NotFound",
        "SnapshotLimitExceeded",
        "ResourceLimitExceeded",
        "ServiceQuotaExceededException",
    }
)
"""AWS answers a retry cannot change. Throttling, 5xx, connection trouble and other 4xx (expired
credentials are refreshed, a fresh snapshot may not be visible yet) stay transient."""


def _hint(code: str, permanent: bool) -> str:
    return "; check the IAM policy and the Region" if permanent and code in ACCESS_CODES else ""


def _aws_client_error(exc: ClientError) -> Fault:
    code = error_code(exc)
    message = one_line(str(exc.response.get("Error", {}).get("Message", "") or ""))
    operation = str(getattr(exc, "operation_name", "") or "AWS call")
    permanent = code in PERMANENT_AWS_CODES and not is_transient(exc)
    hint = _hint(code, permanent)
    status = http_status(exc)
    what = f"{operation} failed: {code or status or 'error'}"
    return Fault(one_line(f"{what}: {message}{hint}" if message else what + hint), permanent,
                 f"Aws{code.replace('.', '') or 'Error'}")


def _ebs_call(exc: EbsCallError) -> Fault:
    permanent = not exc.retryable and exc.code in PERMANENT_AWS_CODES
    hint = _hint(exc.code, permanent)
    return Fault(one_line(str(exc) + hint), permanent, f"Aws{exc.code.replace('.', '') or 'Error'}")


# ------------------------------------------------------------------ everything else

PROGRAMMING_ERRORS: tuple[type[Exception], ...] = (
    TypeError,
    AttributeError,
    NameError,
    KeyError,
    IndexError,
    AssertionError,
    NotImplementedError,
)
"""A bug in snapship (e.g. pyvmomi's client-side 'expected type vim.ManagedEntity'): the same
input fails the same way, so retrying only hides it for the whole budget."""


def classify(exc: BaseException) -> Fault:
    """The one decision: is a retry worth it, and what does a person read?"""
    if isinstance(exc, vmodl.MethodFault):
        return _vsphere(exc)
    if isinstance(exc, verr.VsphereError):
        return _own_vsphere(exc)
    if isinstance(exc, VddkError):
        return _vddk(exc)
    if isinstance(exc, VddkReaderError):
        # Its message already names the reader, the disk and how it ended: a person's line.
        return Fault(one_line(str(exc)), not exc.transient, type(exc).__name__)
    if isinstance(exc, EbsCallError):
        return _ebs_call(exc)
    if isinstance(exc, ClientError):
        return _aws_client_error(exc)
    if isinstance(exc, BotoCoreError):
        return Fault(one_line(f"AWS connection problem: {exc}; retrying"), False, "AwsConnection")
    name = type(exc).__name__
    detail = one_line(str(exc))
    if isinstance(exc, PROGRAMMING_ERRORS):
        return Fault(
            one_line(f"internal error in snapship ({name}: {detail}); please report it with the "
                     "worker log"),
            True,
            "InternalError",
        )
    if isinstance(exc, OSError | TimeoutError):
        return Fault(one_line(f"{name}: {detail}" if detail else name), False, name)
    return Fault(one_line(f"{name}: {detail}" if detail else name), False, name)
