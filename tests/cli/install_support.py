"""Install test support: a complete, valid environment (simulator, local AWS, stub VDDK).

Each install test starts from inputs that work (proved by `test_valid_install_*`) and breaks
exactly one of them, so a failure can only come from that input.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
STUB_TARBALL = (
    ROOT / "sandbox" / "vddk_stub" / "build" / "VMware-vix-disklib-7.0.3-stub.x86_64.tar.gz"
)
ADMIN = "administrator@vsphere.local"
ADMIN_PW = "Adm1n-pw!"
LIMITED = "backup@vsphere.local"
LIMITED_PW = "Backup-pw!"
SECOND = "replicator@vsphere.local"
SECOND_PW = "Second-pw!"

APPLIANCE_INSTANCE_UUID = "5003e1a2-1111-4000-8000-00000000c11e"
APPLIANCE_BIOS_UUID = "4203e1a2-2222-4000-8000-00000000c11e"
APPLIANCE_DMI_UUID = "a2e10342-2222-0040-8000-00000000c11e"  # as Linux shows it

REQUIRED = [
    "VirtualMachine.Config.DiskLease",
    "VirtualMachine.Config.ChangeTracking",
    "VirtualMachine.Provisioning.DiskRandomRead",
    "VirtualMachine.Provisioning.GetVmFiles",
    "VirtualMachine.State.CreateSnapshot",
    "VirtualMachine.State.RemoveSnapshot",
]

SCENARIO: dict[str, Any] = {
    "vcenter": {"version": "8.0"},
    "roles": {
        # "Consolidated Backup user" without Toggle disk change tracking and Acquire disk lease.
        "PartialBackup": ["System.Anonymous", "System.View", "System.Read", *REQUIRED[2:]],
        "Replicator": ["System.Anonymous", "System.View", "System.Read", *REQUIRED],
    },
    "users": [
        {"name": ADMIN, "password": ADMIN_PW, "permissions": [{"entity": "/", "role": "Admin"}]},
        {"name": LIMITED, "password": LIMITED_PW,
         "permissions": [{"entity": "/", "role": "PartialBackup"}]},
        {"name": SECOND, "password": SECOND_PW,
         "permissions": [{"entity": "/", "role": "Replicator"}]},
    ],
    "datacenters": [{
        "name": "dc1",
        "datastores": [{"name": "ds1", "type": "VMFS"}],
        "clusters": [{"name": "cl1", "hosts": ["esx1"]}],
        "vms": [
            {"name": "web-01", "disks": [{"capacity_mib": 4}], "cbt": True},
            # The client's own VM, on virtual hardware before 13: its guest sees the BIOS UUID
            # with the first three fields byte-swapped (APPLIANCE_DMI_UUID).
            {"name": "snapship-appliance", "snapship_client": True, "hardware_version": "vmx-11",
             "instance_uuid": APPLIANCE_INSTANCE_UUID, "bios_uuid": APPLIANCE_BIOS_UUID,
             "disks": [{"capacity_mib": 4}]},
        ],
    }],
}


@dataclass
class InstallEnv:
    sim: Any
    aws: Any

    def argv(self, data_dir: Path, **overrides: Any) -> list[str]:
        """A valid unattended install command line; `overrides` replace (None drops) a flag."""
        flags: dict[str, Any] = {
            "--no-prompt": True,
            "--force-delete-existing-client": True,
            "--data-dir": str(data_dir),
            "--aws-access-key-id": self.aws.access_key_id,
            "--aws-secret-access-key": self.aws.secret_access_key,
            "--region": self.aws.region,
            "--endpoint": self.aws.endpoint_url,
            "--vcenter-host": self.sim.host,
            "--vcenter-port": str(self.sim.port),
            "--vcenter-user": ADMIN,
            "--vcenter-password": ADMIN_PW,
            "--vcenter-ca-path": str(self.sim.ca_path),
            "--vddk-path": str(STUB_TARBALL),
            "--vcenter-client-tags": ["site=lab", "owner=storage team"],
            "--source-server-tags": ["wave=1", "app=web"],
        }
        for key, value in overrides.items():
            flags["--" + key.replace("_", "-")] = value
        argv = ["install"]
        for flag, value in flags.items():
            if value is None or value is False:
                continue
            if value is True:
                argv.append(flag)
            elif isinstance(value, list):
                argv += [flag, *value]
            else:
                argv += [flag, value]
        return argv


def tree_state(path: Path) -> dict[str, tuple[int, str]]:
    """Every file and directory under `path` with its mode and content hash."""
    if not path.exists():
        return {}
    state: dict[str, tuple[int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = ""
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
            state[str(p.relative_to(path))] = (stat.S_IMODE(st.st_mode), digest)
    return state
