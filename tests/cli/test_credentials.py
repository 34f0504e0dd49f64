"""`vcenter_configuration_update`: new credentials are tested first; failure keeps the old ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from install_support import ADMIN, ADMIN_PW, SECOND, SECOND_PW, InstallEnv, tree_state

from snapship.cli import app, credentials
from snapship.config import ClientConfig
from snapship.secrets import SecretStore
from snapship.vsphere.session import VcenterSession

EXACT = (
    "Failed to connect to the vCenter endpoint using the new connection details. "
    "The configuration changes will not be applied."
)


@pytest.fixture
def installed(install_env: InstallEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    data = tmp_path / "client"
    assert app.main(install_env.argv(data)) == 0
    capsys.readouterr()
    return data


def connect_with_stored(data: Path) -> str:
    """Log in the way the worker does: config + secret store. Returns the logged-in user."""
    cfg = ClientConfig.load(data)
    password = SecretStore(cfg.secrets_path).require("vcenter_password")
    with VcenterSession(
        cfg.vcenter.host, cfg.vcenter.user, password, port=cfg.vcenter.port,
        ca_path=cfg.vcenter.ca_path,
    ) as session:
        return str(session.content.sessionManager.currentSession.userName)


def test_wrong_new_password_keeps_old_credentials(
    installed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tree_state(installed)
    code = credentials.main([
        "--data-dir", str(installed), "--new-vcenter-user", SECOND,
        "--new-vcenter-password", "not-the-password",
    ])
    out, err = capsys.readouterr()
    assert code == 1
    assert EXACT in out.splitlines()
    assert "rejected the user name or password" in err
    # The hint names this tool's flags, not install's.
    assert "--new-vcenter-user / --new-vcenter-password" in err
    assert "--vcenter-user " not in err and "vcenter_configuration_update" not in err
    assert tree_state(installed) == before
    # Proof the old credentials are still in force: the worker's way of logging in works.
    assert connect_with_stored(installed) == ADMIN


def test_unknown_user_keeps_old_credentials(
    installed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tree_state(installed)
    code = credentials.main([
        "--data-dir", str(installed), "--new-vcenter-user", "nobody@vsphere.local",
        "--new-vcenter-password", ADMIN_PW,
    ])
    assert code == 1
    assert EXACT in capsys.readouterr().out
    assert tree_state(installed) == before
    assert connect_with_stored(installed) == ADMIN


def test_working_credentials_are_applied(
    installed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = credentials.main([
        "--data-dir", str(installed), "--new-vcenter-user", SECOND,
        "--new-vcenter-password", SECOND_PW,
    ])
    out = capsys.readouterr().out
    assert code == 0, out
    assert EXACT not in out
    cfg = ClientConfig.load(installed)
    assert cfg.vcenter.user == SECOND
    assert SecretStore(cfg.secrets_path).require("vcenter_password").reveal() == SECOND_PW
    assert connect_with_stored(installed) == SECOND


def test_prompts_when_flags_are_absent(
    installed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = credentials.build_parser().parse_args(["--data-dir", str(installed)])
    asked: list[str] = []

    def ask(question: str) -> str:
        asked.append(question)
        return SECOND

    def ask_secret(question: str) -> str:
        asked.append(question)
        return SECOND_PW

    assert credentials.run(args, ask=ask, ask_secret=ask_secret) == 0
    capsys.readouterr()
    assert asked == [f"New vCenter username [{ADMIN}]: ", "New vCenter password: "]
    assert connect_with_stored(installed) == SECOND


def test_snapship_credentials_subcommand_is_the_same_tool(
    installed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = app.main([
        "credentials", "--data-dir", str(installed), "--new-vcenter-user", ADMIN,
        "--new-vcenter-password", "wrong",
    ])
    assert code == 1
    assert EXACT in capsys.readouterr().out
