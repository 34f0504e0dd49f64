"""`vcenter_configuration_update`: change the vCenter user/password only after they work.

MGN's tool of the same name tests the new credentials against vCenter, saves them and restarts
the services on success, and otherwise keeps the old ones and prints one exact sentence. Here
"restart" needs no process bounce: the worker opens a fresh vCenter session per activity from
the secret store and the config file, so a saved change takes effect at the next session (a
session already open finishes with the old login).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path

from snapship.config import ClientConfig, ConfigError, default_data_dir
from snapship.secrets import VCENTER_PASSWORD, Secret, SecretStore, SecretStoreError

FAILURE_MESSAGE = (
    "Failed to connect to the vCenter endpoint using the new connection details. "
    "The configuration changes will not be applied."
)

Ask = Callable[[str], str]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vcenter_configuration_update",
        description="Change the vCenter user name and password the snapship client uses. "
        "The new credentials are tested against vCenter first; on failure nothing changes.",
    )
    p.add_argument("--new-vcenter-user", metavar="USER", help="new vCenter user name")
    p.add_argument("--new-vcenter-password", metavar="PASSWORD", help="new vCenter password")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="client data directory (default $SNAPSHIP_HOME or ~/.snapship)")
    return p


def test_connection(cfg: ClientConfig, user: str, password: Secret) -> str | None:
    """None when `user`/`password` can log in to the configured vCenter, else the reason."""
    from snapship.vsphere.errors import VsphereError
    from snapship.vsphere.session import VcenterSession

    session = VcenterSession(
        cfg.vcenter.host,
        user,
        password,
        port=cfg.vcenter.port,
        ca_path=cfg.vcenter.ca_path or None,
        disable_ssl_cert_validation=cfg.vcenter.disable_ssl_cert_validation,
        timeout_s=30.0,
    )
    try:
        with session:
            if cfg.vcenter.instance_uuid and session.instance_uuid != cfg.vcenter.instance_uuid:
                return (
                    f"{cfg.vcenter.host} answered as a different vCenter "
                    f"({session.instance_uuid}, expected {cfg.vcenter.instance_uuid})"
                )
    except VsphereError as exc:
        return str(exc)
    except Exception as exc:  # anything unexpected still means "not applied"
        return f"{type(exc).__name__}: {exc}"
    return None


def own_flags(reason: str) -> str:
    """The vSphere hints name install's flags; this tool's are --new-vcenter-user/-password,
    and the rest (host, port, CA file) are changed by reinstalling."""
    text = reason.replace(", or vcenter_configuration_update", "")
    text = text.replace("--vcenter-user", "--new-vcenter-user")
    text = text.replace("--vcenter-password", "--new-vcenter-password")
    if any(f in text for f in ("--vcenter-host", "--vcenter-port", "--vcenter-ca-path")):
        text += " (host, port and CA file were set by `snapship install`; rerun it to change them)"
    return text


def run(args: argparse.Namespace, ask: Ask = input, ask_secret: Ask = getpass.getpass) -> int:
    data_dir = (args.data_dir or default_data_dir()).expanduser()
    try:
        cfg = ClientConfig.load(data_dir)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    try:
        user = args.new_vcenter_user
        if not user:
            user = ask(f"New vCenter username [{cfg.vcenter.user}]: ").strip() or cfg.vcenter.user
        password_text = args.new_vcenter_password
        if not password_text:
            password_text = ask_secret("New vCenter password: ")
    except (EOFError, KeyboardInterrupt):
        print("\nCancelled; the configuration was not changed.", file=sys.stderr)
        return 2
    password = Secret(password_text)
    print(f"Testing the new credentials against vCenter {cfg.vcenter.host} ...", flush=True)
    reason = test_connection(cfg, user, password)
    if reason is not None:
        print(FAILURE_MESSAGE)
        print(f"Reason: {own_flags(reason)}", file=sys.stderr)
        return 1
    try:
        SecretStore(cfg.secrets_path).set(VCENTER_PASSWORD, password)
        cfg.vcenter.user = user
        cfg.save()
    except (OSError, SecretStoreError) as exc:
        print(f"The new credentials work but could not be saved: {exc}", file=sys.stderr)
        return 1
    print(
        f"The vCenter credentials were updated (user {user}). The worker uses them from its "
        "next vCenter session; no restart is needed."
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
