"""Error texts say what is wrong and what to do; secrets never appear (no server)."""

from __future__ import annotations

import socket
import ssl

import pytest

from snapship.vsphere import errors
from snapship.vsphere.session import VcenterSession, build_ssl_context, transport_error


class Secret:
    def __init__(self, value: str) -> None:
        self._v = value

    def reveal(self) -> str:
        return self._v

    def __repr__(self) -> str:
        return "Secret(****)"


def test_transport_errors_are_explained():
    e = transport_error(ConnectionRefusedError(), "vc.example", 443, None, 5)
    assert isinstance(e, errors.VcenterUnreachable)
    assert "connection refused" in str(e) and "firewall" in str(e) and "vc.example:443" in str(e)

    e = transport_error(socket.gaierror(-2, "Name"), "nope.invalid", 443, None, 5)
    assert isinstance(e, errors.VcenterUnreachable) and "does not resolve" in str(e)

    e = transport_error(TimeoutError(), "vc", 443, None, 7)
    assert isinstance(e, errors.VcenterUnreachable) and "7 s" in str(e)

    cert_err = ssl.SSLCertVerificationError(1, "bad")
    cert_err.verify_message = "self-signed certificate in certificate chain"
    e = transport_error(cert_err, "vc", 443, "/etc/vc-ca.pem", 5)
    assert isinstance(e, errors.TlsVerificationFailed)
    text = str(e)
    assert "self-signed certificate" in text and "/etc/vc-ca.pem" in text
    assert "--vcenter-ca-path" in text and "--disable-ssl-cert-validation" in text
    assert "https://vc/certs/download.zip" in text
    # A vCenter on another port serves its CA bundle there too: the hint keeps the port.
    text = str(transport_error(cert_err, "vc", 8443, None, 5))
    assert "vc:8443" in text and "https://vc:8443/certs/download.zip" in text
    assert "self-signed certificate in certificate chain" in text


def test_missing_or_unreadable_ca_file(tmp_path):
    with pytest.raises(errors.CaFileUnusable, match="file not found"):
        build_ssl_context(str(tmp_path / "none.pem"), False)
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(errors.CaFileUnusable, match="PEM"):
        build_ssl_context(str(bad), False)


def test_disabled_validation_is_explicit_and_logged(caplog):
    ctx = build_ssl_context(None, True)
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    assert any("DISABLED" in r.getMessage() for r in caplog.records)
    verified = build_ssl_context(None, False)
    assert verified.verify_mode == ssl.CERT_REQUIRED and verified.check_hostname


def test_invalid_credentials_message_names_user_not_password():
    e = errors.InvalidCredentials("vc.example", "svc-snapship")
    assert "vCenter rejected the user name or password" in str(e)
    assert "svc-snapship" in str(e)


def test_session_repr_hides_password():
    s = VcenterSession("vc", "admin", Secret("hunter2-pass"))
    assert "hunter2-pass" not in repr(s) and "hunter2-pass" not in str(vars(s).get("user"))


def test_cbt_and_snapshot_errors_say_what_to_do():
    assert "full resync" in str(errors.CbtResetRequired("vm-1", 2000, "FileFault"))
    assert "retry" in str(errors.SnapshotRemovalInProgress("vm-1", "consolidating"))
    text = str(errors.ForeignSnapshotsPresent("vm-1", ["before-upgrade"]))
    assert "before-upgrade" in text and "delete" in text
    text = str(errors.MissingPrivileges("u", {"vm-1": ["Create snapshot"]}))
    assert "vm-1: Create snapshot" in text
    assert "6.7, 7.0 and 8.0" in str(errors.UnsupportedVcenter("vc", "it runs version 6.5.0"))


@pytest.mark.parametrize(
    ("api_type", "version", "problem"),
    [
        ("VirtualCenter", "6.5.0", "version 6.5.0"),
        ("VirtualCenter", "9.0.0", "version 9.0.0"),
        ("HostAgent", "8.0.2", "not vCenter Server"),
    ],
)
def test_only_vcenter_67_70_80_is_accepted(api_type, version, problem):
    from types import SimpleNamespace

    from pyVmomi import vim

    s = VcenterSession("vc", "admin", "pw")
    about = vim.AboutInfo(apiType=api_type, version=version, fullName=f"VMware {version}")
    s._content = SimpleNamespace(about=about)
    with pytest.raises(errors.UnsupportedVcenter, match=problem) as info:
        s._check_version()
    assert "6.7, 7.0 and 8.0" in str(info.value)
    for ok in ("6.7.0", "7.0.3", "8.0.2"):
        s._content = SimpleNamespace(about=vim.AboutInfo(apiType="VirtualCenter", version=ok))
        s._check_version()
