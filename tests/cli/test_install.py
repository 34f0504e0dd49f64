"""`snapship install`: every MGN installer flag, prompts, and each bad input changing nothing."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from install_support import (
    ADMIN,
    ADMIN_PW,
    LIMITED,
    LIMITED_PW,
    ROOT,
    InstallEnv,
    tree_state,
)

from snapship import __version__
from snapship.cli import app
from snapship.cli import install as install_cli
from snapship.config import ClientConfig
from snapship.secrets import SecretStore


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = app.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def installed(install_env: InstallEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A data directory holding a working client (the state bad inputs must not touch)."""
    data = tmp_path / "client"
    code, _out, err = run(install_env.argv(data), capsys)
    assert code == 0, err
    return data


def test_valid_install_writes_config_secrets_and_vddk(
    install_env: InstallEnv, installed: Path
) -> None:
    cfg = ClientConfig.load(installed)
    assert cfg.aws.region == install_env.aws.region
    assert cfg.aws.endpoint_url == install_env.aws.endpoint_url
    assert cfg.aws.account_id.isdigit() and len(cfg.aws.account_id) == 12
    assert cfg.vcenter.host == install_env.sim.host and cfg.vcenter.port == install_env.sim.port
    assert cfg.vcenter.user == ADMIN
    assert cfg.vcenter.version.startswith("8.0")
    assert cfg.vcenter.instance_uuid
    assert cfg.vcenter_client_tags == {"site": "lab", "owner": "storage team"}
    assert cfg.source_server_tags == {"wave": "1", "app": "web"}
    assert Path(cfg.vddk_lib_path).is_file()
    assert Path(cfg.vddk_lib_path).is_relative_to(installed)
    for name in ("config.json", "secrets.json"):
        assert stat.S_IMODE((installed / name).stat().st_mode) == 0o600
    config_text = (installed / "config.json").read_text()
    assert ADMIN_PW not in config_text
    assert install_env.aws.secret_access_key not in config_text
    store = SecretStore(installed / "secrets.json")
    vcenter_password = store.get("vcenter_password")
    aws_secret = store.get("aws_secret_access_key")
    assert vcenter_password is not None and vcenter_password.reveal() == ADMIN_PW
    assert aws_secret is not None and aws_secret.reveal() == install_env.aws.secret_access_key
    codec_key = store.get("codec_key")
    assert codec_key is not None and json.loads(codec_key.reveal())["current"]
    # No staging leftovers.
    assert sorted(p.name for p in installed.iterdir()) == ["config.json", "secrets.json", "vddk"]


def test_force_reinstall_replaces_client_but_keeps_codec_key(
    install_env: InstallEnv, installed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = ClientConfig.load(installed)
    key_before = SecretStore(installed / "secrets.json").require("codec_key").reveal()
    code, out, _ = run(
        install_env.argv(installed, source_server_tags=["wave=2"], vcenter_client_tags=None),
        capsys,
    )
    assert code == 0
    assert "replaced" in out
    after = ClientConfig.load(installed)
    assert after.client_id != before.client_id
    assert after.source_server_tags == {"wave": "2"}
    assert after.vcenter_client_tags == {}
    assert SecretStore(installed / "secrets.json").require("codec_key").reveal() == key_before


def test_second_install_without_force_is_refused(
    install_env: InstallEnv, installed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tree_state(installed)
    args = install_cli.build_parser().parse_args(
        install_env.argv(installed, no_prompt=None, force_delete_existing_client=None)[1:]
    )
    answers = iter(["n"])
    code = install_cli.run(args, ask=lambda _q: next(answers), ask_secret=lambda _q: "")
    err = capsys.readouterr().err
    assert code == 2
    assert "already installed" in err and "--force-delete-existing-client" in err
    assert tree_state(installed) == before


def test_prompts_for_missing_values(
    install_env: InstallEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "prompted"
    args = install_cli.build_parser().parse_args(["--data-dir", str(data)])
    sim, aws = install_env.sim, install_env.aws
    answers = {
        "AWS Access Key ID": aws.access_key_id,
        "AWS Region name": aws.region,
        "AWS endpoint": aws.endpoint_url,
        "S3 VPC endpoint": "",
        "vCenter IP or hostname": sim.host,
        "vCenter port": str(sim.port),
        "vCenter username": ADMIN,
        "Path to vCenter root CA": str(sim.ca_path),
        "Path to VDDK tarball": str(ROOT / "sandbox/vddk_stub/build"
                                    "/VMware-vix-disklib-7.0.3-stub.x86_64.tar.gz"),
        "Resource tags for this client": "env=lab",
        "Resource tags for discovered": "wave=3 app=db",
        "Instance UUID of this client's VM": "",  # this machine is no VM of the simulator
    }
    secrets = {"AWS Secret Access Key": aws.secret_access_key, "vCenter password": ADMIN_PW}
    asked: list[str] = []

    def ask(question: str) -> str:
        asked.append(question)
        return next(v for k, v in answers.items() if question.startswith(k))

    def ask_secret(question: str) -> str:
        asked.append(question)
        return next(v for k, v in secrets.items() if question.startswith(k))

    assert install_cli.run(args, ask=ask, ask_secret=ask_secret) == 0
    capsys.readouterr()
    cfg = ClientConfig.load(data)
    assert cfg.source_server_tags == {"wave": "3", "app": "db"}
    assert cfg.vcenter_client_tags == {"env": "lab"}
    assert any(q.startswith("vCenter password") for q in asked)
    assert any(q.startswith("AWS Secret Access Key") for q in asked)


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        app.main(["install", "--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"snapship {__version__}"


def test_help_lists_every_installer_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        app.main(["install", "-h"])
    text = capsys.readouterr().out
    for flag in (
        "--aws-access-key-id", "--aws-secret-access-key", "--region", "--endpoint",
        "--s3-endpoint", "--vcenter-host", "--vcenter-port", "--vcenter-user",
        "--vcenter-password", "--vcenter-ca-path", "--vddk-path", "--vcenter-client-tags",
        "--source-server-tags", "--disable-ssl-cert-validation", "--no-prompt",
        "--force-delete-existing-client", "--proxy-address", "--version",
    ):
        assert flag in text


def _bad_tarball(tmp: Path) -> Path:
    """A tarball shaped like VDDK whose library is a shell script, not an x86-64 ELF."""
    src = tmp / "src" / "vmware-vix-disklib-distrib" / "lib64"
    src.mkdir(parents=True)
    (src / "libvixDiskLib.so.7.0.3").write_text("#!/bin/sh\necho not a library\n")
    out = tmp / "VMware-vix-disklib-7.0.3-fake.x86_64.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(tmp / "src" / "vmware-vix-disklib-distrib", arcname="vmware-vix-disklib-distrib")
    return out


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


BAD_INPUTS = {
    "wrong region": (dict(region="moon-central-9x"), "is not an AWS Region name"),
    "bad tag syntax": (dict(source_server_tags=["wave"]), "is not KEY=VALUE"),
    "reserved tag key": (dict(vcenter_client_tags=["aws:owner=me"]), "starts with 'aws:'"),
    "bad tag characters": (dict(source_server_tags=["app=web#1"]), "characters AWS tags"),
    "missing CA file": (dict(vcenter_ca_path="/nonexistent/ca.pem"), "does not exist"),
    "CA not PEM": ("ca_not_pem", "does not hold a PEM certificate"),
    "bad VDDK tarball": ("bad_vddk", "--vddk-path"),
    "missing VDDK tarball": (dict(vddk_path="/nonexistent/vddk.tar.gz"), "does not exist"),
    "wrong vCenter password": (dict(vcenter_password="wrong"), "rejected the user name"),
    "unverifiable certificate": (dict(vcenter_ca_path=None), "could not be verified"),
    "missing privileges": (
        dict(vcenter_user=LIMITED, vcenter_password=LIMITED_PW),
        "lacks required privileges",
    ),
    "no-prompt without force": (
        dict(force_delete_existing_client=None),
        "--no-prompt requires --force-delete-existing-client",
    ),
    "proxy without trailing slash": (
        dict(proxy_address="http://127.0.0.1:3128"), "must end with a trailing slash"
    ),
    "AWS endpoint unreachable": ("aws_down", "Cannot reach AWS"),
    "vCenter unreachable": ("vcenter_down", "Cannot reach vCenter"),
    "bad client VM uuid": (dict(client_vm_uuid="not-a-uuid"), "is not a UUID"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_fails_clearly_and_changes_nothing(
    case: str,
    install_env: InstallEnv,
    installed: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec, expected = BAD_INPUTS[case]
    if spec == "ca_not_pem":
        bad = tmp_path / "ca.pem"
        bad.write_text("this is not a certificate\n")
        overrides: dict[str, object] = dict(vcenter_ca_path=str(bad))
    elif spec == "bad_vddk":
        overrides = dict(vddk_path=str(_bad_tarball(tmp_path)))
    elif spec == "aws_down":
        overrides = dict(endpoint=f"http://127.0.0.1:{_closed_port()}")
    elif spec == "vcenter_down":
        overrides = dict(vcenter_port=str(_closed_port()))
    else:
        assert isinstance(spec, dict)
        overrides = dict(spec)
    fresh = tmp_path / "fresh"
    for data_dir in (installed, fresh):
        before = tree_state(data_dir)
        code, _, err = run(install_env.argv(data_dir, **overrides), capsys)
        assert code != 0, case
        assert expected in err, err
        assert tree_state(data_dir) == before, f"{case} changed {data_dir}"
    assert not fresh.exists()
    # The old client still works: its config loads and names the original user.
    assert ClientConfig.load(installed).vcenter.user == ADMIN


def test_missing_privileges_are_listed(
    install_env: InstallEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = install_env.argv(tmp_path / "d", vcenter_user=LIMITED, vcenter_password=LIMITED_PW)
    code, _, err = run(argv, capsys)
    assert code == 2
    assert "Toggle disk change tracking" in err and "Acquire disk lease" in err
    assert "Create snapshot, " not in err.split("lacks required privileges")[1].split(")")[0]


def test_https_proxy_environment_needs_trailing_slash(
    install_env: InstallEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:3128")
    code, _, err = run(install_env.argv(tmp_path / "d"), capsys)
    assert code == 2 and "https_proxy environment variable" in err
    assert not (tmp_path / "d").exists()


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop root's bypass")
def test_unreadable_ca_file_reports_permission_denied(
    install_env: InstallEnv, installed: Path, tmp_path: Path
) -> None:
    """Run as a process that cannot bypass file modes (root without CAP_DAC_*)."""
    ca = tmp_path / "ca.pem"
    shutil.copy(install_env.sim.ca_path, ca)
    ca.chmod(0)
    before = tree_state(installed)
    prefix: list[str] = []
    if os.geteuid() == 0:
        drop = "-dac_override,-dac_read_search"
        prefix = ["setpriv", "--bounding-set", drop, "--inh-caps", drop]
    argv = install_env.argv(installed, vcenter_ca_path=str(ca))
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "starter", *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2, proc.stderr
    assert "not readable" in proc.stderr and "Error 13" in proc.stderr
    assert tree_state(installed) == before


def test_optional_flags_are_recorded(
    install_env: InstallEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "opts"
    argv = install_env.argv(
        data, vcenter_ca_path=None, disable_ssl_cert_validation=True,
        s3_endpoint="https://bucket.vpce-1.s3.us-east-1.vpce.amazonaws.com",
        client_vm_uuid="5003E1A2-0000-4000-8000-00000000C11E",
        temporal_address="127.0.0.1:17233", temporal_ui_port="18233",
        replication_interval="900", discovery_interval="7200",
    )
    code, _out, err = run(argv, capsys)
    assert code == 0, err
    cfg = ClientConfig.load(data)
    assert cfg.vcenter.disable_ssl_cert_validation and cfg.vcenter.ca_path == ""
    assert cfg.aws.s3_endpoint_url.startswith("https://bucket.vpce-1")
    assert cfg.client_vm_uuid == "5003e1a2-0000-4000-8000-00000000c11e"
    assert cfg.temporal.address == "127.0.0.1:17233" and cfg.temporal.ui_port == 18233
    assert cfg.replication.interval_seconds == 900
    assert cfg.replication.discovery_interval_seconds == 7200


def test_ca_path_and_disabled_validation_contradict(
    install_env: InstallEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(install_env.argv(tmp_path / "d", disable_ssl_cert_validation=True), capsys)
    assert code == 2 and "contradict" in err
    assert not (tmp_path / "d").exists()


def test_no_prompt_reports_every_missing_flag_at_once(
    install_env: InstallEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = install_env.argv(tmp_path / "c", region=None, vcenter_user=None, vddk_path=None)
    code, _out, err = run(argv, capsys)
    assert code == 2
    line = next(line for line in err.splitlines() if "missing:" in line)
    assert "--region" in line and "--vcenter-user" in line and "--vddk-path" in line
    assert not (tmp_path / "c").exists()


def test_one_client_message_says_what_is_checked(
    install_env: InstallEnv, installed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = run(install_env.argv(installed, force_delete_existing_client=None), capsys)
    assert code == 2
    assert "requires --force-delete-existing-client" in err
    args = install_cli.build_parser().parse_args(
        install_env.argv(installed, no_prompt=None, force_delete_existing_client=None)[1:]
    )
    assert install_cli.run(args, ask=lambda _q: "n", ask_secret=lambda _q: "") == 2
    err = capsys.readouterr().err
    assert "one data directory holds one client" in err and "--data-dir" in err
