"""Reading the permit coordinators from outside: for `snapship servers` and the worker's metrics.

Both show the same facts (who holds a permit, who waits and for what cap, disks in use per host)
from the same source, the coordinators' `permits` query, found by workflow type so any vCenter's
coordinator is seen without knowing its id.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from temporalio.client import Client

from snapship.permit_messages import PermitsView

COORDINATOR_TYPE = "PermitCoordinatorWorkflow"
QUERY_TIMEOUT = timedelta(seconds=10)


async def coordinator_views(
    client: Client, only: Iterable[str] | None = None
) -> list[PermitsView]:
    """The running coordinators' views (those in `only`, when given); one that does not answer
    is left out rather than failing the listing."""
    wanted = set(only) if only is not None else None
    views: list[PermitsView] = []
    query = f"WorkflowType = '{COORDINATOR_TYPE}' AND ExecutionStatus = 'Running'"
    async for wf in client.list_workflows(query, rpc_timeout=QUERY_TIMEOUT):
        if wanted is not None and wf.id not in wanted:
            continue
        try:
            view = await client.get_workflow_handle(wf.id).query(
                "permits", result_type=PermitsView, rpc_timeout=QUERY_TIMEOUT
            )
        except Exception:
            continue
        views.append(view)
    return views


def summary_lines(view: PermitsView, label: str = "") -> list[str]:
    """Plain lines for the console: the vCenter cap in use, holders, hosts at their cap."""
    lim = view.limits
    names = ", ".join(sorted(h.vm_name for h in view.holders)) or "none"
    head = f"Shipping permits{f' ({label})' if label else ''}: "
    lines = [
        f"{head}{view.vms_in_use} of {lim.vcenter_vms} VMs hold one ({names}); "
        f"{len(view.waiting)} waiting"
    ]
    if lim.host_disks:
        for host, n in sorted(view.disks_per_host.items()):
            lines.append(f"  {host}: {n} of {lim.host_disks} disks in use")
    budgets = []
    if lim.total_mbps:
        budgets.append(f"{lim.total_mbps} Mbit/s in all")
    if lim.vm_mbps:
        budgets.append(f"{lim.vm_mbps} Mbit/s per VM")
    if lim.ebs_requests_per_second:
        budgets.append(f"{lim.ebs_requests_per_second} EBS requests/s")
    if lim.blackout_windows:
        budgets.append("blackout " + ", ".join(lim.blackout_windows) + " UTC")
    if budgets:
        lines.append("  budgets: " + "; ".join(budgets))
    return lines
