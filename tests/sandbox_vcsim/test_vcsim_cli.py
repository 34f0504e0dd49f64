"""snapship-sandbox's dispatch: help, unknown subcommands, delegation."""

from __future__ import annotations

from sandbox.cli import main


def test_help_and_unknown_subcommand(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("vcenter", "aws", "demo"):  # each listed with what it does
        assert any(line.split()[:1] == [command] and len(line.split()) > 2
                   for line in out.splitlines())
    assert main([]) == 2
    assert main(["bogus"]) == 2
    assert "unknown subcommand" in capsys.readouterr().err


def test_aws_delegates_to_the_local_aws_server(monkeypatch) -> None:
    import sys
    import types

    seen: list[list[str]] = []
    fake = types.ModuleType("sandbox.aws.server")
    fake.main = lambda argv: seen.append(argv) or 0  # type: ignore[attr-defined]
    fake.DEFAULT_REGION = "us-east-1"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sandbox.aws.server", fake)
    keys = types.ModuleType("sandbox.aws.testing")
    keys.FAKE_ACCESS_KEY_ID = "AKIA-TEST"  # type: ignore[attr-defined]
    keys.FAKE_SECRET_ACCESS_KEY = "secret"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sandbox.aws.testing", keys)
    assert main(["aws", "--port", "1"]) == 0
    assert seen == [["--port", "1"]]
