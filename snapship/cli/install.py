"""`snapship install`: the MGN vCenter Client installer's flags and prompts, then snapship.install.

Flags mirror aws-vcenter-client-installer-init.py so an MGN runbook carries over; snapship's own
additions are --data-dir, --client-vm-uuid and where to find Temporal. Missing values are
prompted for (secrets without echo) unless --no-prompt, which — as in MGN — is only allowed
together with --force-delete-existing-client, so an unattended run can never stop at a question.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path

from snapship import __version__
from snapship.config import CONFIG_FILE, default_data_dir
from snapship.install import (
    InstallError,
    InstallRequest,
    check_existing_client,
    check_proxy,
    install,
    parse_tags,
)
from snapship.secrets import Secret

Ask = Callable[[str], str]

EXIT_OK = 0
EXIT_INVALID = 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--aws-access-key-id", metavar="AWS_ACCESS_KEY_ID")
    p.add_argument("--aws-secret-access-key", metavar="AWS_SECRET_ACCESS_KEY")
    p.add_argument("--region", metavar="REGION", help="AWS Region, e.g. eu-west-1")
    p.add_argument("--endpoint", metavar="ENDPOINT", help="AWS endpoint URL (PrivateLink)")
    p.add_argument("--s3-endpoint", metavar="S3_ENDPOINT", help="S3 VPC endpoint URL")
    p.add_argument("--vcenter-host", metavar="VCENTER_HOST")
    p.add_argument("--vcenter-port", metavar="VCENTER_PORT", type=int, default=None,
                   help="vCenter HTTPS port (default 443)")
    p.add_argument("--vcenter-user", metavar="VCENTER_USER")
    p.add_argument("--vcenter-password", metavar="VCENTER_PASSWORD")
    p.add_argument("--vcenter-ca-path", metavar="VCENTER_CA_PATH",
                   help="vCenter root CA certificate (PEM) used to verify TLS")
    p.add_argument("--vddk-path", metavar="VDDK_PATH", help="VDDK 7.0.3 tarball")
    p.add_argument("--vcenter-client-tags", metavar="KEY=VALUE", nargs="+", default=None,
                   help="resource tags for this client")
    p.add_argument("--source-server-tags", metavar="KEY=VALUE", nargs="+", default=None,
                   help="resource tags for the source servers discovery adds")
    p.add_argument("--disable-ssl-cert-validation", action="store_true",
                   help="do not verify vCenter's TLS certificate (not recommended)")
    p.add_argument("--no-prompt", action="store_true",
                   help="unattended install; requires --force-delete-existing-client")
    p.add_argument("--force-delete-existing-client", action="store_true",
                   help="replace a client already installed in the data directory")
    p.add_argument("--proxy-address", metavar="PROXY_ADDRESS",
                   help="HTTPS proxy, with trailing slash: http://PROXY:PORT/ "
                   "(default: $https_proxy)")
    p.add_argument("--version", action="version", version=f"snapship {__version__}")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="client data directory (default $SNAPSHIP_HOME or ~/.snapship)")
    p.add_argument("--client-vm-uuid", default="",
                   help="instance UUID of the VM this client runs on (never discovered)")
    p.add_argument("--temporal-address", default="", help="Temporal frontend host:port")
    p.add_argument("--temporal-namespace", default="", help="Temporal namespace")
    p.add_argument("--temporal-ui-port", type=int, default=0, help="Temporal Web UI port")
    p.add_argument("--allow-unknown-region", action="store_true",
                   help="accept a Region the installed botocore does not know yet")
    p.add_argument("--codec-port", type=int, default=0,
                   help="port of the worker's codec server for the Web UI (default 8234)")
    p.add_argument("--replication-interval", type=int, default=0, metavar="SECONDS",
                   help="default interval between snapshot-shipping runs")
    p.add_argument("--discovery-interval", type=int, default=0, metavar="SECONDS",
                   help="interval of the discovery schedule")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="snapship install",
        description="Install and register the snapship vCenter client.",
    )
    add_arguments(p)
    return p


def _prompt(ask: Ask, label: str, default: str = "") -> str:
    suffix = f" [{default}]" if default else ""
    value = ask(f"{label}{suffix}: ").strip()
    return value or default


def _yes(ask: Ask, question: str) -> bool:
    return ask(f"{question} [y/N]: ").strip().lower() in ("y", "yes")


def required_flags(args: argparse.Namespace) -> list[tuple[str, object]]:
    """The flags an unattended install cannot do without, with their given values."""
    return [
        ("--aws-access-key-id", args.aws_access_key_id),
        ("--aws-secret-access-key", args.aws_secret_access_key),
        ("--region", args.region),
        ("--vcenter-host", args.vcenter_host),
        ("--vcenter-user", args.vcenter_user),
        ("--vcenter-password", args.vcenter_password),
        ("--vddk-path", args.vddk_path),
    ]


def request_from_args(
    args: argparse.Namespace,
    ask: Ask = input,
    ask_secret: Ask = getpass.getpass,
    env: dict[str, str] | None = None,
) -> InstallRequest:
    """Fill an InstallRequest from flags, prompting for what is missing unless --no-prompt."""
    env = dict(os.environ) if env is None else env
    if args.no_prompt and not args.force_delete_existing_client:
        raise InstallError(
            "--no-prompt requires --force-delete-existing-client (an unattended install must "
            "be allowed to replace an existing client)."
        )
    prompting = not args.no_prompt
    if not prompting:
        missing = [flag for flag, value in required_flags(args) if not value]
        if missing:
            raise InstallError(
                "--no-prompt needs every required value on the command line; missing: "
                + ", ".join(missing)
            )
    data_dir = (args.data_dir or default_data_dir()).expanduser()
    # Proxy: the flag wins; otherwise the https_proxy environment variable, same rule.
    if args.proxy_address is not None:
        proxy = check_proxy(args.proxy_address, "--proxy-address")
    else:
        env_proxy = env.get("https_proxy") or env.get("HTTPS_PROXY") or ""
        proxy = check_proxy(env_proxy, "https_proxy environment variable")
    # Tags given on the command line are checked before any prompt wastes the user's time.
    client_tags = parse_tags(args.vcenter_client_tags or [], "--vcenter-client-tags")
    server_tags = parse_tags(args.source_server_tags or [], "--source-server-tags")

    force = bool(args.force_delete_existing_client)
    if prompting and not force and (data_dir / CONFIG_FILE).exists():
        try:
            check_existing_client(data_dir, False)
        except InstallError as exc:
            print(str(exc), file=sys.stderr)
            if not _yes(ask, "Delete the existing client and install a new one?"):
                raise
            force = True

    def value(current: str | None, label: str, default: str = "") -> str:
        if current is not None and current != "":
            return current
        return _prompt(ask, label, default) if prompting else default

    def secret(current: str | None, label: str) -> str:
        if current:
            return current
        return ask_secret(f"{label}: ") if prompting else ""

    key_id = value(args.aws_access_key_id, "AWS Access Key ID")
    key_secret = secret(args.aws_secret_access_key, "AWS Secret Access Key")
    region = value(args.region, "AWS Region name (e.g. eu-west-1)")
    endpoint = value(args.endpoint, "AWS endpoint (optional, Enter to skip)") \
        if args.endpoint is not None or prompting else ""
    s3_endpoint = value(args.s3_endpoint, "S3 VPC endpoint (optional, Enter to skip)") \
        if args.s3_endpoint is not None or prompting else ""
    host = value(args.vcenter_host, "vCenter IP or hostname")
    port_text = str(args.vcenter_port) if args.vcenter_port is not None else (
        _prompt(ask, "vCenter port", "443") if prompting else "443"
    )
    try:
        port = int(port_text)
    except ValueError:
        raise InstallError(f"vCenter port {port_text!r} is not a number.") from None
    user = value(args.vcenter_user, "vCenter username")
    password = secret(args.vcenter_password, "vCenter password")
    ca_path = args.vcenter_ca_path or ""
    disable_tls = bool(args.disable_ssl_cert_validation)
    if prompting and not ca_path and not disable_tls:
        ca_path = _prompt(
            ask, "Path to vCenter root CA certificate (Enter for the system's trusted CAs)"
        )
        if not ca_path and _yes(
            ask, "Disable TLS certificate validation instead (not recommended)?"
        ):
            disable_tls = True
    vddk = value(args.vddk_path, "Path to VDDK tarball")
    if prompting and args.vcenter_client_tags is None:
        text = _prompt(ask, "Resource tags for this client (KEY=VALUE ..., optional)")
        client_tags = parse_tags(text.split(), "--vcenter-client-tags")
    if prompting and args.source_server_tags is None:
        text = _prompt(ask, "Resource tags for discovered source servers (KEY=VALUE ..., optional)")
        server_tags = parse_tags(text.split(), "--source-server-tags")

    return InstallRequest(
        data_dir=data_dir,
        aws_access_key_id=key_id,
        aws_secret_access_key=Secret(key_secret),
        region=region,
        endpoint=endpoint,
        s3_endpoint=s3_endpoint,
        vcenter_host=host,
        vcenter_port=port,
        vcenter_user=user,
        vcenter_password=Secret(password),
        vcenter_ca_path=ca_path,
        disable_ssl_cert_validation=disable_tls,
        vddk_path=vddk,
        vcenter_client_tags=client_tags,
        source_server_tags=server_tags,
        proxy_address=proxy,
        force_delete_existing_client=force,
        client_vm_uuid=args.client_vm_uuid,
        temporal_address=args.temporal_address,
        temporal_namespace=args.temporal_namespace,
        temporal_ui_port=args.temporal_ui_port,
        codec_port=args.codec_port,
        allow_unknown_region=args.allow_unknown_region,
        replication_interval_seconds=args.replication_interval,
        discovery_interval_seconds=args.discovery_interval,
    )


def run(args: argparse.Namespace, ask: Ask = input, ask_secret: Ask = getpass.getpass) -> int:
    try:
        req = request_from_args(args, ask, ask_secret)
        result = install(
            req,
            log=lambda m: print(m, flush=True),
            ask_client_vm=None if args.no_prompt else (lambda q: _prompt(ask, q)),
        )
    except InstallError as exc:
        print(f"Installation failed: {exc}", file=sys.stderr)
        print("Nothing was changed.", file=sys.stderr)
        return EXIT_INVALID
    except (EOFError, KeyboardInterrupt):
        print("\nInstallation cancelled; nothing was changed.", file=sys.stderr)
        return EXIT_INVALID
    for line in result.messages:
        print(line)
    if result.replaced_existing:
        print("The previous client registration in this data directory was replaced.")
    print(
        "Next: `snapship temporal start`, `snapship worker` (keep it running), then "
        "`snapship discover` to add the VMs in the DISCOVERED state."
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
