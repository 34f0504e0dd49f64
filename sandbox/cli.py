"""snapship-sandbox: run the sandbox's stand-ins by hand (vCenter simulator, local AWS, demo).

Each piece prints everything a user needs to go on: the endpoint, the credentials, the CA file
and the environment variables to export before `snapship install` / `snapship worker` (the stub
VDDK's state directory, the appliance VM's DMI file). README: "Run the sandbox by hand".
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

COMMANDS = {
    "vcenter": "serve the vSphere simulator (a scenario file or N generated VMs) over HTTPS",
    "aws": "serve local AWS (EBS direct APIs with AWS's semantics, EC2/STS from moto)",
    "demo": "run the end-to-end demo (simulator, local AWS, Temporal, worker, replication)",
}
STATE_ENV = "SNAPSHIP_STUB_VDDK_STATE"


def usage() -> str:
    lines = ["usage: snapship-sandbox COMMAND [options]   (COMMAND --help for its options)", "",
             "commands:"]
    lines += [f"  {name:<8} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def vcenter_next_steps(info: dict[str, Any], users: dict[str, str], dmi: Path | None) -> str:
    """What a person types next, with this simulator's values filled in."""
    lines = [
        f"vCenter simulator at {info['url']}",
        f"  --vcenter-host {info['host']} --vcenter-port {info['port']}",
        f"  --vcenter-ca-path {info['ca_path']}",
    ]
    lines += [f"  user {name}  password {password}" for name, password in users.items()]
    lines += [
        f"  (credentials also in {info['credentials_file']}; admin API {info['admin_url']})",
        "export before `snapship install` and `snapship worker`:",
        f"  export {STATE_ENV}={info['state_dir']}    # the stub VDDK reads these disks",
    ]
    if dmi is not None:
        from snapship.appliance import DMI_PATH_ENV

        lines.append(f"  export {DMI_PATH_ENV}={dmi}    # this client runs on the appliance VM")
    lines.append("stop with Ctrl-C")
    return "\n".join(lines)


def vcenter_main(argv: list[str]) -> int:
    """Serve a scenario until interrupted."""
    from sandbox.appliance import write_appliance_dmi
    from sandbox.vcsim.admin_client import AdminClient
    from sandbox.vcsim.scenario import generate_scenario, load_scenario
    from sandbox.vcsim.server import SimulatorServer
    from sandbox.vcsim.simulator import Simulator

    p = argparse.ArgumentParser(prog="snapship-sandbox vcenter", description=COMMANDS["vcenter"])
    p.add_argument("--scenario", type=Path,
                   default=Path(__file__).parent / "scenarios" / "demo.yaml")
    p.add_argument("--generate", type=int, default=0, help="N generated VMs instead of a file")
    p.add_argument("--port", type=int, default=8989)
    p.add_argument("--admin-port", type=int, default=0)
    p.add_argument("--hostname", default="localhost")
    p.add_argument("--state-dir", type=Path, default=Path(".data/vcsim"))
    p.add_argument("--json", action="store_true", help="print the endpoint as JSON only")
    args = p.parse_args(argv)
    scenario = generate_scenario(args.generate) if args.generate else load_scenario(
        args.scenario)
    state_dir = args.state_dir.resolve()
    sim = Simulator(scenario, state_dir)
    srv = SimulatorServer(sim, port=args.port, admin_port=args.admin_port,
                          hostname=args.hostname)
    srv.start()
    info = srv.write_info(state_dir / "endpoint.json")
    if args.json:
        print(json.dumps(info, indent=2), flush=True)
    else:
        dmi = write_appliance_dmi(AdminClient(srv.admin_url), state_dir)
        users = {u.name: u.password for u in sim.users.values()}
        print(vcenter_next_steps(info, users, dmi), flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    srv.stop()
    return 0


def aws_main(argv: list[str]) -> int:
    """Local AWS: the credentials and Region to give `snapship install`, then the server."""
    if not any(a in ("-h", "--help") for a in argv):
        from sandbox.aws.server import DEFAULT_REGION
        from sandbox.aws.testing import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY

        print("local AWS: any key pair is accepted; these are the sandbox's:\n"
              f"  --aws-access-key-id {FAKE_ACCESS_KEY_ID} "
              f"--aws-secret-access-key {FAKE_SECRET_ACCESS_KEY}\n"
              f"  --region {DEFAULT_REGION} --endpoint <the endpoint below>", flush=True)
    return _delegate("sandbox.aws.server", argv)


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
        print(usage())
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "vcenter":
        return vcenter_main(rest)
    if cmd == "aws":
        return aws_main(rest)
    if cmd == "demo":
        return _delegate("sandbox.demo", rest)
    print(f"snapship-sandbox: unknown subcommand {cmd!r}\n{usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
