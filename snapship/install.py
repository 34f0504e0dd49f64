"""Registering a client: check every input first, then write config, secrets and VDDK at once.

Why this order: an installer that half-writes a configuration before discovering that the
vCenter password is wrong leaves a client that neither works nor can be reinstalled without
`--force-delete-existing-client`. So every check runs first — syntax of the region, tags and
proxy, the CA file, the VDDK tarball, the AWS credentials (STS GetCallerIdentity through the
configured endpoint), vCenter reachability with verified TLS, its version and the six required
privileges — and only when all pass is anything written. The VDDK is unpacked into a staging
directory next to its final place and renamed in, so a failure while writing leaves the old
client intact.

Decisions (where MGN's guide is silent):
- One client per data directory (one registration per AWS account + Region on a client VM). A
  second install into a data directory that holds a client is refused unless
  `--force-delete-existing-client`, which replaces the old config, secrets and unpacked VDDK.
  It does not terminate source-server workflows: their ids derive from the vCenter and VM UUIDs,
  so a reinstall against the same vCenter adopts them again, and replicated EBS snapshots stay.
  The payload encryption key (`codec_key`) is kept across a forced reinstall, because open
  workflow histories are encrypted with it.
- The Temporal dev server's database under `<data dir>/temporal` is never touched by install.
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import tempfile
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snapship.appliance import ClientVm, dmi_path, find_client_vm, read_product_uuid
from snapship.config import CONFIG_FILE, SECRETS_FILE, ClientConfig, ConfigError
from snapship.secrets import (
    AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    CODEC_KEY,
    VCENTER_PASSWORD,
    Secret,
    SecretStore,
)

if TYPE_CHECKING:
    from snapship.vsphere.session import VcenterSession

VDDK_DIR = "vddk"
MAX_TAGS = 50
# Partition prefix (us, eu, ap, cn, eusc, ...), optional qualifiers (gov, iso, de, ...), number.
_REGION_RE = re.compile(r"^[a-z]{2,4}(-[a-z]+)+-[0-9]{1,2}$")
# AWS tag rules: letters, digits, spaces and _ . : / = + - @ (Unicode letters allowed).
_TAG_CHARS_RE = re.compile(r"^[\w\s.:/=+\-@]*$", re.UNICODE)

Log = Callable[[str], None]


class InstallError(Exception):
    """An input or environment problem; the message says what to fix. Nothing was written."""


# ---------------------------------------------------------------- request


@dataclass
class InstallRequest:
    """Everything `snapship install` needs, after prompting. Secrets stay wrapped."""

    data_dir: Path
    aws_access_key_id: str
    aws_secret_access_key: Secret
    region: str
    vcenter_host: str
    vcenter_user: str
    vcenter_password: Secret
    vddk_path: str
    vcenter_port: int = 443
    endpoint: str = ""
    s3_endpoint: str = ""
    vcenter_ca_path: str = ""
    disable_ssl_cert_validation: bool = False
    vcenter_client_tags: dict[str, str] = field(default_factory=dict)
    source_server_tags: dict[str, str] = field(default_factory=dict)
    proxy_address: str = ""
    force_delete_existing_client: bool = False
    client_vm_uuid: str = ""
    temporal_address: str = ""
    temporal_namespace: str = ""
    temporal_ui_port: int = 0
    codec_port: int = 0
    allow_unknown_region: bool = False
    replication_interval_seconds: int = 0
    discovery_interval_seconds: int = 0


@dataclass
class VcenterCheck:
    instance_uuid: str
    version: str
    full_name: str
    client_vm: ClientVm | None = None
    client_vm_note: str = ""


@dataclass
class InstallResult:
    config: ClientConfig
    replaced_existing: bool
    account_id: str
    vcenter: VcenterCheck
    messages: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- syntax checks


def known_regions() -> set[str]:
    """The Regions the installed botocore knows (EC2's, over every partition)."""
    import botocore.session

    session = botocore.session.get_session()
    known: set[str] = set()
    for partition in session.get_available_partitions():
        known.update(session.get_available_regions("ec2", partition_name=partition))
    return known


def check_region(region: str, allow_unknown: bool = False) -> str:
    """A Region code, and one botocore knows unless `allow_unknown` (a Region newer than it)."""
    region = region.strip()
    if not region:
        raise InstallError("An AWS Region is required (--region), for example eu-west-1.")
    if not _REGION_RE.match(region):
        raise InstallError(
            f"{region!r} is not an AWS Region name. Use a Region code such as us-east-1 or "
            "eu-west-1 (--region)."
        )
    if not allow_unknown and region not in known_regions():
        import difflib

        import botocore

        close = difflib.get_close_matches(region, sorted(known_regions()), n=3)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise InstallError(
            f"{region} is not a Region this client's AWS library (botocore "
            f"{botocore.__version__}) knows.{hint} If it is a new Region, add "
            "--allow-unknown-region."
        )
    return region


def parse_tags(items: Iterable[str], flag: str) -> dict[str, str]:
    """`KEY=VALUE` strings to a dict, enforcing AWS tag rules (so EBS tagging cannot fail later)."""
    tags: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise InstallError(
                f"Tag {item!r} in {flag} is not KEY=VALUE. Separate tags with spaces, "
                f"e.g. {flag} team=storage env=test"
            )
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise InstallError(f"Tag {item!r} in {flag} has an empty key; use KEY=VALUE.")
        if len(key) > 128:
            raise InstallError(f"Tag key {key[:20]!r}... in {flag} is longer than 128 characters.")
        if len(value) > 256:
            raise InstallError(f"The value of tag {key!r} in {flag} is longer than 256 characters.")
        if key.lower().startswith("aws:"):
            raise InstallError(
                f"Tag key {key!r} in {flag} starts with 'aws:', which AWS reserves for itself."
            )
        for part, what in ((key, "key"), (value, "value")):
            if not _TAG_CHARS_RE.match(part):
                raise InstallError(
                    f"Tag {what} {part!r} in {flag} has characters AWS tags do not allow; use "
                    "letters, digits, spaces and _ . : / = + - @ only."
                )
        if key in tags:
            raise InstallError(f"Tag key {key!r} appears twice in {flag}.")
        tags[key] = value
    if len(tags) > MAX_TAGS:
        raise InstallError(f"{flag} has {len(tags)} tags; AWS allows at most {MAX_TAGS}.")
    return tags


def check_proxy(proxy: str, source: str = "--proxy-address") -> str:
    proxy = proxy.strip()
    if not proxy:
        return ""
    if not re.match(r"^https?://[^/\s]+/$", proxy):
        if not proxy.endswith("/"):
            raise InstallError(
                f"The proxy address {proxy!r} ({source}) must end with a trailing slash, "
                "e.g. http://PROXY:PORT/"
            )
        raise InstallError(
            f"The proxy address {proxy!r} ({source}) must look like http://PROXY:PORT/"
        )
    return proxy


def check_url(url: str, flag: str) -> str:
    url = url.strip()
    if url and not re.match(r"^https?://[^\s/]+(/\S*)?$", url):
        raise InstallError(f"{flag} {url!r} is not an http(s) URL, e.g. https://HOST[:PORT]")
    return url


def check_port(port: int, flag: str = "--vcenter-port") -> int:
    if not 1 <= port <= 65535:
        raise InstallError(f"{flag} {port} is not a TCP port (1-65535).")
    return port


def check_ca_file(path: str) -> str:
    """Readable PEM CA file, or a message naming the problem (MGN's "Error 13" included)."""
    if not path:
        return ""
    p = Path(path).expanduser()
    if not p.exists():
        raise InstallError(f"The vCenter CA file {p} does not exist (--vcenter-ca-path).")
    if not p.is_file():
        raise InstallError(f"The vCenter CA path {p} is not a file (--vcenter-ca-path).")
    try:
        data = p.read_bytes()
    except PermissionError:
        raise InstallError(
            f"The vCenter CA file {p} is not readable by this user (permission denied, Error 13). "
            "Put it in a directory the snapship user can read and make the file readable."
        ) from None
    except OSError as exc:
        raise InstallError(f"The vCenter CA file {p} cannot be read: {exc.strerror}.") from None
    try:
        ctx = ssl.create_default_context()
        ctx.load_verify_locations(cadata=data.decode("ascii", errors="strict"))
    except (ssl.SSLError, ValueError, UnicodeDecodeError):
        raise InstallError(
            f"The vCenter CA file {p} does not hold a PEM certificate. Download vCenter's root CA "
            "from https://<vcenter>/certs/download.zip and use the .0 file from its lin/ folder."
        ) from None
    return str(p.resolve())


def check_vddk_tarball(path: str) -> Any:
    """Validate the VDDK tarball without unpacking it; returns the validator's description."""
    if not path:
        raise InstallError(
            "The path to the VDDK 7.0.3 tarball is required (--vddk-path), e.g. "
            "VMware-vix-disklib-7.0.3-21933544.x86_64.tar.gz"
        )
    p = Path(path).expanduser()
    if not p.is_file():
        raise InstallError(f"The VDDK tarball {p} does not exist or is not a file (--vddk-path).")
    if not os.access(p, os.R_OK):
        raise InstallError(f"The VDDK tarball {p} is not readable by this user (--vddk-path).")
    from snapship.vddk import tarball

    try:
        return tarball.validate_tarball(p)
    except tarball.VddkTarballError as exc:
        raise InstallError(f"{exc} (--vddk-path {p})") from None


# ---------------------------------------------------------------- environment checks


def check_aws(req: InstallRequest) -> str:
    """STS GetCallerIdentity through the configured endpoint; returns the account id."""
    from botocore.credentials import Credentials
    from botocore.exceptions import BotoCoreError, ClientError

    from snapship.ebs.client import AwsConnection, make_client

    conn = AwsConnection(
        region=req.region,
        endpoint_url=req.endpoint or None,
        credentials=Credentials(req.aws_access_key_id, req.aws_secret_access_key.reveal()),
        proxy_address=req.proxy_address or None,
        connect_timeout_s=10.0,
        read_timeout_s=20.0,
        max_attempts=2,
    )
    try:
        sts = make_client(conn, "sts")
        identity = sts.get_caller_identity()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise InstallError(
            f"AWS rejected the access key (STS GetCallerIdentity: {code or 'error'}). Check "
            "--aws-access-key-id / --aws-secret-access-key and that the key is active."
        ) from None
    except BotoCoreError as exc:
        where = req.endpoint or f"the AWS endpoints of {req.region}"
        raise InstallError(
            f"Cannot reach AWS at {where} ({type(exc).__name__}: {exc}). Check --endpoint, "
            "--region, --proxy-address and outbound HTTPS from this client."
        ) from None
    return str(identity.get("Account", ""))


def _vcenter_session(req: InstallRequest) -> VcenterSession:
    """A not yet connected session with the vCenter the request names (install's checks)."""
    from snapship.vsphere.session import VcenterSession

    return VcenterSession(
        req.vcenter_host,
        req.vcenter_user,
        req.vcenter_password,
        port=req.vcenter_port,
        ca_path=req.vcenter_ca_path or None,
        disable_ssl_cert_validation=req.disable_ssl_cert_validation,
        timeout_s=30.0,
    )


def check_vcenter(req: InstallRequest) -> VcenterCheck:
    """Connect with verified TLS (unless disabled), check the version and the privileges."""
    from snapship.vsphere.errors import MissingPrivileges, VsphereError

    session = _vcenter_session(req)
    try:
        with session:
            about = session.about
            check = VcenterCheck(
                instance_uuid=str(about.instanceUuid),
                version=str(about.version),
                full_name=str(about.fullName),
            )
            missing = missing_privileges(session)
            if missing:
                raise MissingPrivileges(req.vcenter_user, missing)
            check.client_vm, check.client_vm_note = locate_client_vm(
                session.content, req.client_vm_uuid
            )
    except VsphereError as exc:
        raise InstallError(str(exc)) from None
    return check


def locate_client_vm(content: Any, given: str) -> tuple[ClientVm | None, str]:
    """This client's own VM in vCenter, and a note when it could not be identified.

    With `--client-vm-uuid` the VM is looked up by instance UUID, then BIOS UUID; without it,
    by the DMI product UUID this machine exposes (snapship.appliance).
    """
    if given:
        for instance in (True, False):
            vm = content.searchIndex.FindByUuid(
                datacenter=None, uuid=given, vmSearch=True, instanceUuid=instance
            )
            if vm is not None:
                return (
                    ClientVm(
                        name=str(vm.name),
                        instance_uuid=str(vm.config.instanceUuid),
                        bios_uuid=str(vm.config.uuid),
                        moref=str(vm._moId),
                    ),
                    "",
                )
        return None, (
            f"no VM this vCenter user can see has UUID {given} (--client-vm-uuid); it is "
            "recorded anyway and discovery leaves out a VM with that UUID"
        )
    path = dmi_path()
    product_uuid = read_product_uuid(path)
    if product_uuid is None:
        return None, (
            f"cannot read this machine's BIOS UUID from {path} (not a VM, or not run as "
            "root), so the client's own VM is not known"
        )
    found = find_client_vm(content, product_uuid)
    if found is None:
        return None, (
            f"no VM in vCenter has this machine's BIOS UUID {product_uuid} (from {path}); "
            "is this client running on a VM of this vCenter?"
        )
    return found, ""


def missing_privileges(session: Any) -> dict[str, list[str]]:
    """The required privileges the user lacks on the root folder (empty when all are granted).

    Checked at the root (granted with propagation, as MGN's role setup does) because discovery
    covers the whole inventory; each run's preflight checks the VM at its current location again.
    """
    from snapship.vsphere.privileges import check_privileges

    root = session.content.rootFolder
    report = check_privileges(session, [root])
    return {
        ("the vCenter root folder" if moref == str(root._moId) else moref): [p.name for p in ps]
        for moref, ps in report.missing.items()
        if ps
    }


def _existing_client(data_dir: Path) -> ClientConfig | None:
    if not (data_dir / CONFIG_FILE).exists():
        return None
    try:
        return ClientConfig.load(data_dir)
    except (ConfigError, ValueError, TypeError):
        # An unreadable old config is still an existing client: force is needed to replace it.
        return ClientConfig(data_dir=str(data_dir))


def check_existing_client(data_dir: Path, force: bool) -> ClientConfig | None:
    old = _existing_client(data_dir)
    if old is not None and not force:
        where = ""
        if old.aws.account_id or old.aws.region:
            where = f" (AWS account {old.aws.account_id or '?'}, Region {old.aws.region or '?'}"
            where += f", vCenter {old.vcenter.host or '?'})"
        raise InstallError(
            f"A snapship client is already installed in {data_dir}{where}: one data directory "
            "holds one client (checked: its config file exists). Use another --data-dir for "
            "a second client, or rerun with --force-delete-existing-client to replace this one."
        )
    return old


# ---------------------------------------------------------------- the install itself


def validate(
    req: InstallRequest,
    log: Log = lambda _m: None,
    ask_client_vm: Callable[[str], str] | None = None,
) -> tuple[str, VcenterCheck, Any]:
    """Every check, cheapest first. Raises InstallError; writes nothing."""
    req.region = check_region(req.region, req.allow_unknown_region)
    req.proxy_address = check_proxy(req.proxy_address)
    req.endpoint = check_url(req.endpoint, "--endpoint")
    req.s3_endpoint = check_url(req.s3_endpoint, "--s3-endpoint")
    check_port(req.vcenter_port)
    if not req.aws_access_key_id.strip():
        raise InstallError("An AWS access key id is required (--aws-access-key-id).")
    if not req.aws_secret_access_key:
        raise InstallError("An AWS secret access key is required (--aws-secret-access-key).")
    if not req.vcenter_host.strip():
        raise InstallError("The vCenter host name is required (--vcenter-host).")
    if not req.vcenter_user.strip():
        raise InstallError("The vCenter user name is required (--vcenter-user).")
    if not req.vcenter_password:
        raise InstallError("The vCenter password is required (--vcenter-password).")
    if req.vcenter_ca_path and req.disable_ssl_cert_validation:
        raise InstallError(
            "--vcenter-ca-path and --disable-ssl-cert-validation contradict each other; "
            "give one of them."
        )
    req.vcenter_ca_path = check_ca_file(req.vcenter_ca_path)
    parse_tags([f"{k}={v}" for k, v in req.vcenter_client_tags.items()], "--vcenter-client-tags")
    parse_tags([f"{k}={v}" for k, v in req.source_server_tags.items()], "--source-server-tags")
    if req.client_vm_uuid:
        req.client_vm_uuid = _client_vm_uuid(req.client_vm_uuid)
    log("Checking the VDDK tarball ...")
    vddk = check_vddk_tarball(req.vddk_path)
    check_existing_client(req.data_dir, req.force_delete_existing_client)
    log("Checking the AWS credentials ...")
    account_id = check_aws(req)
    log(f"  AWS account {account_id}, Region {req.region}")
    log(f"Connecting to vCenter {req.vcenter_host}:{req.vcenter_port} ...")
    vcenter = check_vcenter(req)
    log(f"  {vcenter.full_name}; all required privileges granted")
    if vcenter.client_vm is not None:
        req.client_vm_uuid = vcenter.client_vm.instance_uuid
        log(f"  this client runs on VM {vcenter.client_vm.name} (instance UUID "
            f"{req.client_vm_uuid}); discovery leaves it out")
    elif not req.client_vm_uuid and ask_client_vm is not None:
        log(f"  {vcenter.client_vm_note}")
        answer = ask_client_vm(
            "Instance UUID of this client's VM, to leave it out of discovery "
            "(vCenter: VM > Summary > VM instance UUID; Enter to skip)"
        ).strip()
        if answer:
            req.client_vm_uuid = _client_vm_uuid(answer)
            vcenter.client_vm, vcenter.client_vm_note = _lookup_again(req)
    if vcenter.client_vm is None:
        note = vcenter.client_vm_note
        if not req.client_vm_uuid:
            note += "; discovery will list it: give --client-vm-uuid to leave it out"
        log(f"  warning: {note}")
    return account_id, vcenter, vddk


def _client_vm_uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InstallError(
            f"--client-vm-uuid {value!r} is not a UUID (the client VM's instance UUID, "
            "config.instanceUuid)."
        ) from None


def _lookup_again(req: InstallRequest) -> tuple[ClientVm | None, str]:
    """Look up a UUID the user typed at the prompt (a second, short vCenter session)."""
    from snapship.vsphere.errors import VsphereError

    session = _vcenter_session(req)
    try:
        with session:
            return locate_client_vm(session.content, req.client_vm_uuid)
    except VsphereError as exc:
        raise InstallError(str(exc)) from None


def install(
    req: InstallRequest,
    log: Log = lambda _m: None,
    ask_client_vm: Callable[[str], str] | None = None,
) -> InstallResult:
    """Validate everything, then write the client atomically enough to never leave half of it.

    `ask_client_vm` is the prompt for the client VM's UUID when it cannot be found (None with
    --no-prompt: the install then goes on with a warning).
    """
    account_id, vcenter, _vddk = validate(req, log, ask_client_vm)
    data_dir = req.data_dir.expanduser().resolve()
    old = check_existing_client(data_dir, req.force_delete_existing_client)
    old_codec_key = _old_codec_key(data_dir) if old is not None else None

    created_data_dir = not data_dir.exists()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = Path(tempfile.mkdtemp(prefix=".install-", dir=data_dir))
    committed = False
    try:
        log("Unpacking the VDDK ...")
        from snapship.vddk import tarball

        try:
            lib = tarball.install_tarball(Path(req.vddk_path).expanduser(), staging / VDDK_DIR)
        except tarball.VddkTarballError as exc:
            raise InstallError(f"{exc} (--vddk-path {req.vddk_path})") from None
        lib_rel = Path(lib).resolve().relative_to((staging / VDDK_DIR).resolve())

        cfg = ClientConfig(
            client_id=str(uuid.uuid4()),
            data_dir=str(data_dir),
            vddk_lib_path=str(data_dir / VDDK_DIR / lib_rel),
            client_vm_uuid=req.client_vm_uuid,
            vcenter_client_tags=dict(req.vcenter_client_tags),
            source_server_tags=dict(req.source_server_tags),
            installed_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        cfg.vcenter.host = req.vcenter_host
        cfg.vcenter.port = req.vcenter_port
        cfg.vcenter.user = req.vcenter_user
        cfg.vcenter.ca_path = req.vcenter_ca_path
        cfg.vcenter.disable_ssl_cert_validation = req.disable_ssl_cert_validation
        cfg.vcenter.instance_uuid = vcenter.instance_uuid
        cfg.vcenter.version = vcenter.version
        cfg.aws.region = req.region
        cfg.aws.endpoint_url = req.endpoint
        cfg.aws.s3_endpoint_url = req.s3_endpoint
        cfg.aws.proxy_address = req.proxy_address
        cfg.aws.account_id = account_id
        if old is not None:
            # Keep operational settings the operator may have tuned.
            cfg.temporal = old.temporal
            cfg.replication = old.replication
            cfg.telemetry = old.telemetry
        if req.temporal_address:
            cfg.temporal.address = req.temporal_address
        if req.temporal_namespace:
            cfg.temporal.namespace = req.temporal_namespace
        if req.temporal_ui_port:
            cfg.temporal.ui_port = req.temporal_ui_port
        if req.codec_port:
            cfg.telemetry.codec_port = req.codec_port
        if req.replication_interval_seconds:
            cfg.replication.interval_seconds = req.replication_interval_seconds
        if req.discovery_interval_seconds:
            cfg.replication.discovery_interval_seconds = req.discovery_interval_seconds

        staged_secrets = SecretStore(staging / SECRETS_FILE)
        staged_secrets.set(AWS_ACCESS_KEY_ID, req.aws_access_key_id)
        staged_secrets.set(AWS_SECRET_ACCESS_KEY, req.aws_secret_access_key)
        staged_secrets.set(VCENTER_PASSWORD, req.vcenter_password)
        staged_secrets.set(CODEC_KEY, old_codec_key or _new_codec_key())

        # Commit: swap in the VDDK, then the secrets, then the config (what marks a client).
        final_vddk = data_dir / VDDK_DIR
        if final_vddk.exists():
            retired = staging / "old-vddk"
            os.replace(final_vddk, retired)
        os.replace(staging / VDDK_DIR, final_vddk)
        os.replace(staging / SECRETS_FILE, data_dir / SECRETS_FILE)
        cfg.save()
        committed = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created_data_dir and not committed:
            shutil.rmtree(data_dir, ignore_errors=True)
    messages = [
        f"snapship client {cfg.client_id} installed in {data_dir}",
        f"vCenter {req.vcenter_host} ({vcenter.full_name}), AWS account {account_id} "
        f"in {req.region}",
    ]
    if vcenter.client_vm is not None:
        messages.append(
            f"client VM {vcenter.client_vm.name} ({req.client_vm_uuid}) is left out of discovery"
        )
    return InstallResult(
        config=cfg,
        replaced_existing=old is not None,
        account_id=account_id,
        vcenter=vcenter,
        messages=messages,
    )


def _old_codec_key(data_dir: Path) -> Secret | None:
    try:
        return SecretStore(data_dir / SECRETS_FILE).get(CODEC_KEY)
    except Exception:
        return None


def _new_codec_key() -> Secret:
    from snapship.codec import KeyRing

    return KeyRing.generate().to_secret()
