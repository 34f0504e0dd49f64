"""`snapship`: the user's console (install, discover, vcenter, servers, replicate, temporal,
worker, demo).

Every command that changes a server is a Temporal Update on that server's workflow, so the same
thing can be done with the `temporal` CLI (see README); this console adds selection by name,
glob, tag or "all discovered", per-server outcome reporting and a live `--watch` view.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from snapship import __version__
from snapship.cli import console, render
from snapship.config import ClientConfig, ConfigError, default_data_dir

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3


CONNECT_TIMEOUT = 10.0


class CliError(Exception):
    """A problem to print as-is (no traceback) with a non-zero exit."""


# ---------------------------------------------------------------- helpers


def _data_dir(args: argparse.Namespace) -> Path:
    value = getattr(args, "data_dir", None)
    return (Path(value) if value else default_data_dir()).expanduser()


def load_config(args: argparse.Namespace) -> ClientConfig:
    try:
        return ClientConfig.load(_data_dir(args))
    except ConfigError as exc:
        raise CliError(str(exc)) from None


async def connect(cfg: ClientConfig) -> Any:
    """The Temporal client with snapship's payload codec, or a message saying what to start."""
    from snapship.runtime import connect_client

    try:
        return await asyncio.wait_for(connect_client(cfg), CONNECT_TIMEOUT)
    except Exception as exc:
        raise CliError(
            f"Cannot connect to Temporal at {cfg.temporal.address} (namespace "
            f"{cfg.temporal.namespace}): {_first_line(exc)}. Start it with "
            "`snapship temporal start` (or point the client at your cluster)."
        ) from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else f"no answer within {CONNECT_TIMEOUT:.0f} s"


async def require_worker(client: Any, cfg: ClientConfig) -> None:
    """Stop with one line when no worker polls the control queue (nothing is sent then)."""
    from snapship.cli.worker_check import NoWorkerError
    from snapship.cli.worker_check import require_worker as check

    try:
        await check(client, cfg.temporal.control_task_queue)
    except NoWorkerError as exc:
        raise CliError(str(exc)) from None


async def worker_missing(client: Any, cfg: ClientConfig) -> str:
    """The no-worker message, or "" when a worker polls the control queue."""
    try:
        await require_worker(client, cfg)
    except CliError as exc:
        return str(exc)
    return ""


def _add_vcenter_filter(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vcenter", default=None, metavar="NAME|ID|HOST",
                   help="only this vCenter's servers (default: every vCenter of the client)")


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None,
                   help="client data directory (default $SNAPSHIP_HOME or ~/.snapship)")


# ---------------------------------------------------------------- servers


def _view(args: argparse.Namespace) -> str:
    if getattr(args, "all", False):
        return console.VIEW_ALL
    if getattr(args, "discovered", False):
        return console.VIEW_DISCOVERED
    if getattr(args, "archived", False):
        return console.VIEW_ARCHIVED
    return console.VIEW_ACTIVE


def _scope(cfg: ClientConfig, args: argparse.Namespace) -> tuple[str, list[str]]:
    """The visibility filter of `--vcenter` (default: every vCenter of the client)."""
    from snapship.vcenters import UnknownVcenter, find_vcenter, visibility_scope

    key = getattr(args, "vcenter", None)
    if not key:
        return visibility_scope(cfg, None)
    try:
        return visibility_scope(cfg, find_vcenter(cfg, key, strict=True))
    except UnknownVcenter as exc:
        raise CliError(str(exc)) from None


def _filters(args: argparse.Namespace) -> str:
    parts = [f"--name {n}" for n in args.name or []]
    parts += [f"--state {s!r}" for s in args.state or []]
    parts += [f"--tag {t}" for t in args.tag or []]
    return " ".join(parts)


async def _servers(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    host, extra = _scope(cfg, args)
    client = await connect(cfg)
    if args.servers_cmd == "show":
        await require_worker(client, cfg)
        selection = await console.select(
            client, console.VIEW_ALL, host, names=[args.name], extra=extra
        )
        if not selection.rows:
            raise CliError(
                f"No source server is named {args.name!r} (try `snapship servers --all`)."
            )
        if args.json:
            print(json.dumps([render.to_jsonable(r) for r in selection.rows], indent=2))
            return EXIT_OK
        print("\n\n".join(render.dashboard(r) for r in selection.rows))
        return EXIT_ERROR if all(r.query_error for r in selection.rows) else EXIT_OK
    try:
        tags = console.parse_tag_filters(args.tag or [])
    except ValueError as exc:
        raise CliError(str(exc)) from None
    missing = await worker_missing(client, cfg)
    if missing and (tags or args.state):
        raise CliError(f"{missing} (--tag and --state need live status)")
    try:
        selection = await console.select(
            client,
            _view(args),
            host,
            names=args.name or [],
            states=args.state or [],
            tags=tags,
            with_status=not missing,
            status_limit=None if args.full else console.LIST_STATUS_LIMIT,
            extra=extra,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(render.servers_json(selection.rows))
        return EXIT_OK
    if not selection.rows and selection.in_view and (args.name or args.state or tags):
        print(
            f"No source server matches the filters ({_filters(args)}); "
            f"{selection.in_view} server(s) in this view ({_view(args)})."
        )
        return EXIT_OK
    if not selection.rows:
        hint = {
            console.VIEW_ACTIVE: "No active source servers. `snapship servers --discovered` lists "
            "the discovered ones; start replication with `snapship replicate start`.",
            console.VIEW_DISCOVERED: "No discovered source servers. Run `snapship discover`.",
            console.VIEW_ALL: "No source servers. Run `snapship discover`.",
            console.VIEW_ARCHIVED: "No archived source servers.",
        }[_view(args)]
        print(hint)
        return EXIT_OK
    from snapship.cli.vcenter import servers_tables

    print(servers_tables(cfg, selection.rows))
    print(f"\n{len(selection.rows)} source server(s) ({_view(args)})")
    for line in await _permit_lines(client, selection.rows):
        print(line)
    if missing:
        print(f"Progress, lag and errors not shown: {missing}", file=sys.stderr)
        return EXIT_PARTIAL
    if selection.status_skipped:
        print(
            f"More than {console.LIST_STATUS_LIMIT} servers: progress, lag and errors were not "
            "queried. Narrow with --name/--state/--tag, or add --full."
        )
    return EXIT_OK


async def _permit_lines(client: Any, rows: list[console.ServerRow]) -> list[str]:
    """Who holds a shipping permit and how full each cap is, per coordinator of these rows."""
    from snapship.permit_view import coordinator_views, summary_lines

    ids = {r.status.permit_coordinator_id for r in rows if r.status is not None}
    ids.discard("")
    if not ids:
        return []
    lines: list[str] = []
    views = await coordinator_views(client, ids)
    for view in views:
        label = view.coordinator_id.removeprefix("snapship-permits-") if len(views) > 1 else ""
        lines += summary_lines(view, label)
    return lines


# ---------------------------------------------------------------- replicate


async def _replicate(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    if not (args.names or args.tag or args.all_discovered or args.all):
        raise CliError(
            "Say which servers: NAME/GLOB ..., --tag KEY=VALUE, --all-discovered or --all."
        )
    if args.interval is not None and args.action != "start":
        raise CliError("--interval applies to `replicate start` only.")
    if args.interval is not None and args.interval < 1:
        raise CliError("--interval must be a positive number of seconds.")
    try:
        tags = console.parse_tag_filters(args.tag or [])
    except ValueError as exc:
        raise CliError(str(exc)) from None
    host, extra = _scope(cfg, args)
    client = await connect(cfg)
    await require_worker(client, cfg)
    view = console.VIEW_DISCOVERED if args.all_discovered else console.VIEW_ALL
    selection = await console.select(
        client, view, host, names=args.names or [], tags=tags, with_status=bool(tags),
        extra=extra,
    )
    for pattern in selection.unmatched:
        print(f"{pattern}: no source server matches", file=sys.stderr)
    if not selection.rows:
        print("No source server matched the selection.", file=sys.stderr)
        return EXIT_ERROR
    outcomes = await console.send_commands(
        client, selection.rows, args.action, interval_seconds=args.interval
    )
    width = max(len(o.vm_name) for o in outcomes)
    for o in sorted(outcomes, key=lambda o: o.vm_name.lower()):
        verdict = "ok" if o.accepted else "refused"
        state = f" [{o.lifecycle_state}/{o.data_replication_state}]" if o.lifecycle_state else ""
        print(f"{o.vm_name.ljust(width)}  {verdict:<8} {o.message}{state}")
    accepted = [o for o in outcomes if o.accepted]
    refused = [o for o in outcomes if not o.accepted]
    print(f"\n{args.action}: {len(accepted)} accepted, {len(refused)} refused")
    if args.watch and accepted:
        ids = {o.workflow_id for o in accepted}
        rows = [r for r in selection.rows if r.workflow_id in ids]
        if not await watch(client, rows, args.timeout):
            return EXIT_ERROR
    if refused or selection.unmatched:
        return EXIT_PARTIAL if accepted else EXIT_ERROR
    return EXIT_OK


async def watch(
    client: Any, rows: Sequence[console.ServerRow], timeout: float | None, every: float = 2.0
) -> bool:
    """Redraw progress until every server is ready for testing (or the timeout). True if ready."""
    deadline = time.monotonic() + timeout if timeout else None
    tty = sys.stdout.isatty()
    rows = list(rows)
    while True:
        await console.fill_status(client, rows)
        text = render.watch_lines(rows)
        ready = sum(1 for r in rows if console.is_ready(r))
        header = f"{ready}/{len(rows)} ready for testing  ({time.strftime('%H:%M:%S')})"
        if tty:
            sys.stdout.write("\x1b[2J\x1b[H" + header + "\n" + text + "\n")
        else:
            print(header + "\n" + text, flush=True)
        sys.stdout.flush()
        if ready == len(rows):
            return True
        if deadline is not None and time.monotonic() > deadline:
            print("Timed out waiting for the selection to be ready for testing.", file=sys.stderr)
            return False
        pause = every if tty else max(every, 10.0)  # a log file gets fewer frames
        if deadline is not None:
            pause = min(pause, max(0.1, deadline - time.monotonic()))
        await asyncio.sleep(pause)


# ---------------------------------------------------------------- discover


async def _discover(args: argparse.Namespace) -> int:
    from snapship import vcenters

    cfg = load_config(args)
    chosen = vcenters.all_vcenters(cfg)
    if args.vcenter:
        try:
            chosen = [vcenters.find_vcenter(cfg, args.vcenter, strict=True)]
        except vcenters.UnknownVcenter as exc:
            raise CliError(str(exc)) from None
    client = await connect(cfg)
    await require_worker(client, cfg)
    codes = [await _discover_one(args, cfg, client, vc) for vc in chosen]
    return max(codes)


async def _discover_one(
    args: argparse.Namespace, cfg: ClientConfig, client: Any, vc: Any
) -> int:
    from snapship import vcenters
    from snapship.cli import discover

    if not args.no_schedule:
        what = await discover.ensure_discovery_schedule(client, cfg, vc)
        print(
            f"Discovery schedule {what}: every {vcenters.discovery_interval_seconds(cfg, vc)}s "
            f"(Temporal schedule '{vcenters.discovery_schedule_id(cfg, vc)}')."
        )
    if args.schedule_only:
        return EXIT_OK
    print(f"Discovering VMs in vCenter {vcenters.display_name(vc)} ...", flush=True)
    try:
        result = await discover.run_discovery(
            client, cfg, wait=not args.no_wait, batch_size=args.batch_size, vc=vc
        )
    except discover.DiscoveryNotPickedUp as exc:
        raise CliError(str(exc)) from None
    if result is None:
        print("Discovery started.")
        return EXIT_OK
    print(discover.describe(result))
    return EXIT_PARTIAL if result.failed else EXIT_OK


async def _vcenter(args: argparse.Namespace) -> int:
    from snapship.cli import vcenter

    return await vcenter.run(args, load_config(args), connect)


# ---------------------------------------------------------------- temporal / worker / demo


def _temporal(args: argparse.Namespace) -> int:
    from snapship import temporal_server as ts

    data_dir = _data_dir(args)
    try:
        cfg: ClientConfig | None = ClientConfig.load(data_dir)
    except ConfigError:
        cfg = None
    host, _, port_text = (cfg.temporal.address if cfg else "127.0.0.1:7233").rpartition(":")
    port = args.port or int(port_text)
    ui_port = args.ui_port or (cfg.temporal.ui_port if cfg else 8233)
    codec = args.ui_codec_endpoint
    if codec is None and cfg is not None:
        # Always the configured address, running or not: the dev server reads it once at start,
        # and the worker serves the codec there whenever it runs, in whatever order they start.
        codec = f"http://{cfg.telemetry.codec_address}:{cfg.telemetry.codec_port}"
    settings = ts.DevServerSettings(
        data_dir=data_dir,
        ip=host or "127.0.0.1",
        port=port,
        ui_port=ui_port,
        namespace=cfg.temporal.namespace if cfg else "default",
        ui_codec_endpoint=codec or None,
        headless=args.headless,
    )
    try:
        if args.action == "start":
            pid = ts.start(settings)
            print(f"Temporal dev server running (pid {pid}) at {settings.address}; database "
                  f"{settings.db_path}")
            if not settings.headless:
                print(f"Web UI: http://{settings.ip}:{settings.ui_port}"
                      + (f" (codec {codec})" if codec else ""))
        elif args.action == "stop":
            print("stopped" if ts.stop(settings) else "not running")
        else:
            print(ts.status(settings))
    except ts.TemporalServerError as exc:
        raise CliError(str(exc)) from None
    return EXIT_OK


def _worker(args: argparse.Namespace) -> int:
    """Run worker.main in this process (the console script `snapship-worker` is the same)."""
    import worker

    rest = [a for a in args.rest if a != "--"]
    sys.argv = ["snapship-worker", *rest]
    return worker.main(rest)


def _demo(args: argparse.Namespace) -> int:
    """The demo lives in the sandbox package; run it as a separate process (never imported)."""
    cmd = [sys.executable, "-m", "sandbox.demo", *args.rest]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 130


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from snapship.cli import credentials, discover
    from snapship.cli import install as install_cli
    from snapship.cli import vcenter as vcenter_cli

    parser = argparse.ArgumentParser(
        prog="snapship",
        description="Agentless snapshot-shipping replication of vCenter VMs into AWS.",
    )
    parser.add_argument("--version", action="version", version=f"snapship {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("install", help="install and register the client (MGN installer flags)")
    install_cli.add_arguments(p)

    p = sub.add_parser("credentials", help="change the vCenter user/password (tested first)")
    for action in credentials.build_parser()._actions:
        if action.option_strings and action.dest != "help":
            p._add_action(action)

    p = sub.add_parser("discover", help="discover VMs now and keep the discovery schedule")
    discover.add_arguments(p)
    _add_vcenter_filter(p)
    _add_data_dir(p)

    p = sub.add_parser("vcenter", help="add, remove or list the client's vCenters")
    vcenter_cli.add_arguments(p)
    _add_data_dir(p)

    p = sub.add_parser("servers", help="list source servers, or `servers show NAME`")
    _add_data_dir(p)
    view = p.add_mutually_exclusive_group()
    view.add_argument("--discovered", action="store_true",
                      help="discovered servers not replicating yet")
    view.add_argument("--all", action="store_true", help="every source server")
    view.add_argument("--archived", action="store_true",
                      help="archived servers (they leave the other views)")
    p.add_argument("--state", action="append", metavar="STATE",
                   help="lifecycle or data replication state (repeatable)")
    p.add_argument("--name", action="append", metavar="GLOB", help="VM name glob (repeatable)")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE", help="tag filter (repeatable)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_vcenter_filter(p)
    p.add_argument("--full", action="store_true",
                   help=f"query live status even for more than {console.LIST_STATUS_LIMIT} servers")
    servers_sub = p.add_subparsers(dest="servers_cmd", metavar="show")
    show = servers_sub.add_parser("show", help="migration dashboard of one server")
    show.add_argument("name", help="VM name, glob or source server id")
    # SUPPRESS: a value given before `show` must not be reset by the sub-parser's default.
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    show.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS)
    show.add_argument("--vcenter", default=argparse.SUPPRESS)

    p = sub.add_parser("replicate", help="start/stop/pause/resume replication of a selection")
    p.add_argument("action", choices=["start", "stop", "pause", "resume", "run-now"])
    p.add_argument("names", nargs="*", metavar="NAME|GLOB")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE", help="select by tag")
    p.add_argument("--all-discovered", action="store_true",
                   help="every server in the DISCOVERED state")
    p.add_argument("--all", action="store_true", help="every source server of this client")
    p.add_argument("--interval", type=int, default=None, metavar="SECONDS",
                   help="seconds between snapshot-shipping runs (start only)")
    p.add_argument("--watch", action="store_true",
                   help="show progress until the selection is ready for testing")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="give up watching after this long")
    _add_vcenter_filter(p)
    _add_data_dir(p)

    p = sub.add_parser("temporal", help="the embedded Temporal dev server")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--port", type=int, default=0, help="gRPC port (default from config)")
    p.add_argument("--ui-port", type=int, default=0, help="Web UI port (default 8233)")
    p.add_argument("--ui-codec-endpoint", default=None,
                   help="codec server URL for the Web UI (default: the worker's, from config)")
    p.add_argument("--headless", action="store_true", help="no Web UI")
    _add_data_dir(p)

    # Listed for --help only: main() hands their arguments to the programs they run.
    from snapship.cli import lifecycle as lifecycle_cli

    lifecycle_cli.add_arguments(sub, _add_data_dir)
    sub.add_parser("worker", help="run the Temporal worker in the foreground (snapship-worker)")
    sub.add_parser("demo", help="run the end-to-end demo against the sandbox")
    return parser


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw and raw[0] in ("worker", "demo"):
        # Everything after the command belongs to the program it runs (its own --help too).
        args = argparse.Namespace(command=raw[0], rest=raw[1:], data_dir=None)
        return _worker(args) if raw[0] == "worker" else _demo(args)
    args = build_parser().parse_args(raw)
    try:
        if args.command == "install":
            from snapship.cli import install as install_cli

            return install_cli.run(args)
        if args.command == "credentials":
            from snapship.cli import credentials

            return credentials.run(args)
        if args.command == "servers":
            if getattr(args, "servers_cmd", None) is None:
                args.servers_cmd = "list"
            return asyncio.run(_servers(args))
        if args.command == "replicate":
            return asyncio.run(_replicate(args))
        if args.command == "discover":
            return asyncio.run(_discover(args))
        if args.command == "vcenter":
            return asyncio.run(_vcenter(args))
        if args.command == "temporal":
            return _temporal(args)
        from snapship.cli import lifecycle as lifecycle_cli

        if args.command in lifecycle_cli.COMMANDS:
            return asyncio.run(lifecycle_cli.run(args, load_config(args), connect))
    except CliError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command}")  # pragma: no cover
