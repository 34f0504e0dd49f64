"""snapship-sandbox's dispatch: help, unknown subcommands, delegation."""

from __future__ import annotations

from sandbox.cli import main


def test_help_and_unknown_subcommand(capsys) -> None:
    assert main(["--help"]) == 0
    assert "vcenter" in capsys.readouterr().out
    assert main([]) == 2
    assert main(["bogus"]) == 2
    assert "unknown subcommand" in capsys.readouterr().err


def test_aws_delegates_to_the_local_aws_server(monkeypatch) -> None:
    import sys
    import types

    seen: list[list[str]] = []
    fake = types.ModuleType("sandbox.aws.server")
    fake.main = lambda argv: seen.append(argv) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sandbox.aws.server", fake)
    assert main(["aws", "--port", "1"]) == 0
    assert seen == [["--port", "1"]]
