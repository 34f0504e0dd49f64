"""snapship-sandbox: run the sandbox's stand-ins (vcenter simulator, local AWS, demo)."""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import threading
from pathlib import Path


def vcenter_main(argv: list[str]) -> int:
    """Serve a scenario until interrupted; prints endpoint, CA path and credentials file."""
    from sandbox.vcsim.scenario import generate_scenario, load_scenario
    from sandbox.vcsim.server import SimulatorServer
    from sandbox.vcsim.simulator import Simulator

    p = argparse.ArgumentParser(prog="snapship-sandbox vcenter")
    p.add_argument("--scenario", type=Path,
                   default=Path(__file__).parent / "scenarios" / "demo.yaml")
    p.add_argument("--generate", type=int, default=0, help="N generated VMs instead of a file")
    p.add_argument("--port", type=int, default=8989)
    p.add_argument("--admin-port", type=int, default=0)
    p.add_argument("--hostname", default="localhost")
    p.add_argument("--state-dir", type=Path, default=Path(".data/vcsim"))
    args = p.parse_args(argv)
    scenario = generate_scenario(args.generate) if args.generate else load_scenario(
        args.scenario)
    sim = Simulator(scenario, args.state_dir)
    srv = SimulatorServer(sim, port=args.port, admin_port=args.admin_port,
                          hostname=args.hostname)
    srv.start()
    info = srv.write_info(args.state_dir / "endpoint.json")
    print(json.dumps(info, indent=2), flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    srv.stop()
    return 0


def _delegate(module: str, argv: list[str]) -> int:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        print(f"snapship-sandbox: {module} is not available ({e})", file=sys.stderr)
        return 2
    return int(mod.main(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: snapship-sandbox {vcenter,aws,demo} [options]")
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "vcenter":
        return vcenter_main(rest)
    if cmd == "aws":
        return _delegate("sandbox.aws.server", rest)
    if cmd == "demo":
        return _delegate("sandbox.demo", rest)
    print(f"snapship-sandbox: unknown subcommand {cmd!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
