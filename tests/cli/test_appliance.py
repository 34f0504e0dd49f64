"""The appliance excludes itself: install finds the client's own VM, discovery never lists it.

The simulator holds the appliance VM on virtual hardware 11, whose guest sees its BIOS UUID with
the first three fields byte-swapped; the "DMI file" this client reads (the documented override
of /sys/class/dmi/id/product_uuid) holds that guest view, so detection has to undo the quirk.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from install_support import (
    ADMIN,
    ADMIN_PW,
    APPLIANCE_DMI_UUID,
    APPLIANCE_INSTANCE_UUID,
    InstallEnv,
)

from snapship.appliance import DMI_PATH_ENV, bios_uuid_forms
from snapship.cli import app
from snapship.cli import install as install_cli
from snapship.config import ClientConfig
from snapship.discovery import scan_vcenter
from snapship.vsphere.session import VcenterSession


def _dmi(tmp_path: Path, value: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "product_uuid"
    path.write_text(value.upper() + "\n")  # the kernel prints it in upper case on some versions
    monkeypatch.setenv(DMI_PATH_ENV, str(path))
    return path


def test_byte_order_quirk_forms() -> None:
    assert bios_uuid_forms(APPLIANCE_DMI_UUID) == [
        APPLIANCE_DMI_UUID, "4203e1a2-2222-4000-8000-00000000c11e"]


def test_install_finds_its_own_vm_and_discovery_leaves_it_out(
    install_env: InstallEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _dmi(tmp_path, APPLIANCE_DMI_UUID, monkeypatch)
    data = tmp_path / "client"
    code = app.main(install_env.argv(data))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "this client runs on VM snapship-appliance" in out
    cfg = ClientConfig.load(data)
    assert cfg.client_vm_uuid == APPLIANCE_INSTANCE_UUID

    sim = install_env.sim
    with VcenterSession(sim.host, ADMIN, ADMIN_PW, port=sim.port,
                        ca_path=str(sim.ca_path)) as session:
        scan = scan_vcenter(session, cfg.client_vm_uuid)
    names = [s.facts.name for s in scan.servers]
    assert "web-01" in names and "snapship-appliance" not in names
    assert scan.client_vm_skipped == 1


def test_unattended_install_without_dmi_warns_and_names_the_flag(
    install_env: InstallEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(DMI_PATH_ENV, str(tmp_path / "absent"))
    data = tmp_path / "client"
    code = app.main(install_env.argv(data))
    out, err = capsys.readouterr()
    assert code == 0, err
    warning = next(line for line in out.splitlines() if "warning:" in line)
    assert "cannot read this machine's BIOS UUID" in warning and "--client-vm-uuid" in warning
    assert ClientConfig.load(data).client_vm_uuid == ""


def test_interactive_install_asks_when_its_vm_is_not_found(
    install_env: InstallEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _dmi(tmp_path, str(uuid.uuid4()), monkeypatch)  # a machine that is no VM of this vCenter
    data = tmp_path / "client"
    argv = install_env.argv(data, no_prompt=None, force_delete_existing_client=None)
    args = install_cli.build_parser().parse_args(argv[1:])
    asked: list[str] = []

    def ask(question: str) -> str:
        asked.append(question)
        return APPLIANCE_INSTANCE_UUID if question.startswith("Instance UUID") else ""

    assert install_cli.run(args, ask=ask, ask_secret=lambda _q: "") == 0
    out = capsys.readouterr().out
    assert "no VM in vCenter has this machine's BIOS UUID" in out
    assert any(q.startswith("Instance UUID of this client's VM") for q in asked)
    assert "client VM snapship-appliance" in out
    assert ClientConfig.load(data).client_vm_uuid == APPLIANCE_INSTANCE_UUID
