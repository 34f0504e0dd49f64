"""`snapship vcenter add|update|remove|list`: several vCenters in one client.

MGN allows one vCenter client per AWS account; snapship lets one deployment replicate from
several. The vCenter given to `snapship install` is the first; these commands add further ones,
each with its own credentials, CA, cap and discovery schedule (`snapship.vcenters`), and remove
them again without losing a replica (`snapship.vcenter_admin`).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from snapship import vcenters
from snapship.cli.console import ServerRow
from snapship.config import ClientConfig, VcenterSettings
from snapship.error_text import one_line
from snapship.secrets import Secret
from snapship.vcenter_admin import (
    AddVcenterRequest,
    UpdateVcenterRequest,
    VcenterAdminError,
    add_vcenter,
    apply_cap,
    remove_vcenter,
    update_vcenter,
)

Ask = Callable[[str], str]


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="vcenter_cmd", metavar="add|update|remove|list")
    sub.required = True
    add = sub.add_parser("add", help="add a vCenter (connection and privileges tested first)")
    add.add_argument("--host", required=True, help="vCenter host name or address")
    add.add_argument("--port", type=int, default=443, help="vCenter HTTPS port (443)")
    add.add_argument("--user", required=True, help="vCenter user name")
    add.add_argument("--password", default=None, help="vCenter password (prompted if omitted)")
    tls = add.add_mutually_exclusive_group()
    tls.add_argument("--ca-path", default="", help="PEM file of the vCenter's root CA")
    tls.add_argument("--disable-ssl-cert-validation", action="store_true",
                     help="do not verify the vCenter's certificate")
    add.add_argument("--name", default="", help="what to call it (default: its host)")
    add.add_argument("--max-shipping", type=int, default=0, metavar="N",
                     help="at most N of its VMs ship at once (default: the client's cap)")
    add.add_argument("--discovery-interval", type=int, default=0, metavar="SECONDS",
                     help="seconds between discovery passes (default: the client's)")
    add.add_argument("--no-schedule", action="store_true",
                     help="do not create its discovery schedule now")
    up = sub.add_parser("update", help="change a vCenter's credentials, CA, cap or discovery "
                        "interval (new connection details are tested first)")
    up.add_argument("vcenter", metavar="NAME|ID|HOST", help="which vCenter")
    up.add_argument("--user", default=None, help="new vCenter user name")
    up.add_argument("--password", default=None, help="new vCenter password")
    up.add_argument("--ask-password", action="store_true", help="prompt for a new password")
    up_tls = up.add_mutually_exclusive_group()
    up_tls.add_argument("--ca-path", default=None, help="new PEM file of the vCenter's root CA")
    up_tls.add_argument("--disable-ssl-cert-validation", action="store_true", default=None,
                        help="stop verifying the vCenter's certificate")
    up.add_argument("--max-shipping", type=int, default=None, metavar="N",
                    help="at most N of its VMs ship at once (0: the client's cap)")
    up.add_argument("--discovery-interval", type=int, default=None, metavar="SECONDS",
                    help="seconds between discovery passes (0: the client's)")
    rm = sub.add_parser("remove", help="remove an added vCenter (its replicas stay)")
    rm.add_argument("vcenter", metavar="NAME|ID|HOST", help="which vCenter")
    rm.add_argument("--stop-replication", action="store_true",
                    help="stop replication of its servers first instead of refusing")
    ls = sub.add_parser("list", help="the client's vCenters")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    for each in (add, up, rm, ls):
        # SUPPRESS: a value given before the sub-command must not be reset by its default.
        each.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS)


def describe(cfg: ClientConfig, vc: VcenterSettings) -> dict[str, Any]:
    return {
        "name": vcenters.display_name(vc),
        "id": vcenters.vcenter_id(vc),
        "host": vc.host,
        "port": vc.port,
        "user": vc.user,
        "version": vc.version,
        "tls": "not verified" if vc.disable_ssl_cert_validation else (vc.ca_path or "system CAs"),
        "max_shipping": vcenters.shipping_slots(cfg, vc),
        "shipping_task_queue": vcenters.shipping_task_queue(cfg, vc),
        "discovery_schedule": vcenters.discovery_schedule_id(cfg, vc),
        "discovery_interval_seconds": vcenters.discovery_interval_seconds(cfg, vc),
        "first": vcenters.is_first(cfg, vc),
    }


def list_text(cfg: ClientConfig) -> str:
    from snapship.cli.render import table

    rows = [describe(cfg, vc) for vc in vcenters.all_vcenters(cfg)]
    cells = [
        [r["name"] + (" *" if r["first"] else ""), f"{r['host']}:{r['port']}", r["id"] or "-",
         r["user"], str(r["max_shipping"]), f"{r['discovery_interval_seconds']}s", r["tls"]]
        for r in rows
    ]
    headers = ["VCENTER", "ADDRESS", "ID", "USER", "CAP", "DISCOVERY", "TLS"]
    return table(headers, cells) + "\n\n* installed with the client (snapship install)"


async def run(
    args: argparse.Namespace,
    cfg: ClientConfig,
    connect: Callable[[ClientConfig], Any],
    ask_secret: Ask = getpass.getpass,
) -> int:
    """Exit code; errors are one line on stderr."""
    try:
        if args.vcenter_cmd == "list":
            if args.json:
                print(json.dumps([describe(cfg, v) for v in vcenters.all_vcenters(cfg)], indent=2))
            else:
                print(list_text(cfg))
            return 0
        if args.vcenter_cmd == "add":
            return await _add(args, cfg, connect, ask_secret)
        if args.vcenter_cmd == "update":
            return await _update(args, cfg, connect, ask_secret)
        client = await connect(cfg)
        if args.stop_replication:
            from snapship.cli.worker_check import NoWorkerError, require_worker

            try:  # stopping is an Update: without a worker it would only time out
                await require_worker(client, cfg.temporal.control_task_queue)
            except NoWorkerError as exc:
                raise VcenterAdminError(str(exc)) from None
        vc = await remove_vcenter(
            client, cfg, args.vcenter, stop_replication=args.stop_replication,
            log=lambda m: print(m, flush=True),
        )
        print(
            f"vCenter {vcenters.display_name(vc)} was removed from the client. Its source "
            "servers and their snapshot groups in AWS are kept; adding it again brings them back."
        )
        return 0
    except VcenterAdminError as exc:
        print(str(exc), file=sys.stderr)
        return 1


async def _add(
    args: argparse.Namespace,
    cfg: ClientConfig,
    connect: Callable[[ClientConfig], Any],
    ask_secret: Ask,
) -> int:
    password = args.password
    if password is None:
        try:
            password = ask_secret(f"Password of {args.user} on {args.host}: ")
        except (EOFError, KeyboardInterrupt):
            print("\nCancelled; nothing was added.", file=sys.stderr)
            return 2
    req = AddVcenterRequest(
        host=args.host, user=args.user, password=Secret(password), port=args.port,
        ca_path=args.ca_path, disable_ssl_cert_validation=args.disable_ssl_cert_validation,
        name=args.name, shipping_slots=args.max_shipping,
        discovery_interval_seconds=args.discovery_interval,
    )
    vc = add_vcenter(cfg, req, log=lambda m: print(m, flush=True))
    name = vcenters.display_name(vc)
    print(f"vCenter {name} ({vc.instance_uuid}) was added; at most "
          f"{vcenters.shipping_slots(cfg, vc)} of its VMs ship at once.")
    if not args.no_schedule:
        from snapship.cli import discover

        try:
            client = await connect(cfg)
            what = await discover.ensure_discovery_schedule(client, cfg, vc)
            print(f"Discovery schedule {what}: Temporal schedule "
                  f"'{vcenters.discovery_schedule_id(cfg, vc)}'.")
        except Exception as exc:  # Temporal down: the vCenter is added; discover makes it later
            print(f"The discovery schedule was not created ({one_line(str(exc))}); "
                  f"`snapship discover --vcenter {name}` creates it.", file=sys.stderr)
    print(f"Discover its VMs now with `snapship discover --vcenter {name}`.")
    return 0


async def _update(
    args: argparse.Namespace,
    cfg: ClientConfig,
    connect: Callable[[ClientConfig], Any],
    ask_secret: Ask,
) -> int:
    password = args.password
    if password is None and args.ask_password:
        try:
            password = ask_secret("New vCenter password: ")
        except (EOFError, KeyboardInterrupt):
            print("\nCancelled; the configuration was not changed.", file=sys.stderr)
            return 2
    req = UpdateVcenterRequest(
        user=args.user, password=Secret(password) if password is not None else None,
        ca_path=args.ca_path, disable_ssl_cert_validation=args.disable_ssl_cert_validation,
        shipping_slots=args.max_shipping, discovery_interval_seconds=args.discovery_interval,
    )
    vc = update_vcenter(cfg, args.vcenter, req, log=lambda m: print(m, flush=True))
    name = vcenters.display_name(vc)
    print(f"vCenter {name} was updated. The worker uses new connection details from its next "
          "vCenter session; no restart is needed.")
    if args.max_shipping is not None:
        client = await connect(cfg)
        print(f"Cap of vCenter {name}: {await apply_cap(client, cfg, vc)}.")
    if args.discovery_interval is not None:
        from snapship.cli import discover

        try:
            client = await connect(cfg)
            await discover.ensure_discovery_schedule(client, cfg, vc)
            print(f"Discovery schedule '{vcenters.discovery_schedule_id(cfg, vc)}' now runs every "
                  f"{vcenters.discovery_interval_seconds(cfg, vc)}s.")
        except Exception as exc:  # saved anyway; `snapship discover` brings the schedule in line
            print(f"The discovery schedule was not updated ({one_line(str(exc))}); "
                  f"`snapship discover --vcenter {name} --schedule` updates it.", file=sys.stderr)
    return 0


def servers_tables(cfg: ClientConfig, rows: Sequence[ServerRow]) -> str:
    """`snapship servers`: one table, or with several vCenters one table per vCenter under a
    heading naming it (two vCenters may share a host name, so rows go by workflow id)."""
    from snapship.cli.render import servers_table

    if not cfg.vcenters:
        return servers_table(rows)
    parts: list[str] = []
    left = list(rows)
    for vc in vcenters.all_vcenters(cfg):
        prefix = vcenters.workflow_id_prefix(vc)
        mine = [r for r in left if r.workflow_id.startswith(prefix)]
        left = [r for r in left if not r.workflow_id.startswith(prefix)]
        if mine:
            parts.append(f"vCenter {vcenters.display_name(vc)} ({vc.host}:{vc.port}, "
                         f"{vcenters.vcenter_id(vc)})\n{servers_table(mine)}")
    if left:
        parts.append(f"Other vCenters\n{servers_table(left)}")
    return "\n\n".join(parts)
