"""Several vCenters in the client's config: old configs load unchanged, each added vCenter is
found by its id, name or address, and owns its secret, shipping queue, cap and schedule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from activities.deps import VcenterNotConfigured, WorkerDeps
from snapship import vcenters
from snapship.config import ClientConfig, ReplicationDefaults, VcenterSettings
from snapship.secrets import VCENTER_PASSWORD, SecretStore
from worker import permit_limits, shipping_queues

FIRST_UUID = "11111111-2222-3333-4444-555555555555"
SECOND_UUID = "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE"


def two_vcenters(tmp_path: Path) -> ClientConfig:
    cfg = ClientConfig(
        client_id="c1",
        data_dir=str(tmp_path),
        vcenter=VcenterSettings(host="vc1.example", user="a", instance_uuid=FIRST_UUID),
        replication=ReplicationDefaults(shipping_slots=7, discovery_interval_seconds=900),
    )
    cfg.vcenters.append(
        VcenterSettings(
            host="vc2.example",
            port=8443,
            user="b",
            instance_uuid=SECOND_UUID.lower(),
            name="Berlin",
            password_secret=vcenters.password_secret_name(SECOND_UUID),
            shipping_slots=3,
            discovery_interval_seconds=120,
        )
    )
    return cfg


def test_a_config_from_before_several_vcenters_loads_unchanged(tmp_path: Path) -> None:
    old = {
        "client_id": "c1",
        "vcenter": {"host": "vc1.example", "port": 443, "user": "a", "ca_path": "",
                    "disable_ssl_cert_validation": False, "instance_uuid": FIRST_UUID,
                    "version": "8.0"},
        "replication": {"shipping_slots": 9},
    }
    (tmp_path / "config.json").write_text(json.dumps(old))
    cfg = ClientConfig.load(tmp_path)
    assert cfg.vcenters == []
    assert cfg.vcenter.host == "vc1.example" and cfg.vcenter.instance_uuid == FIRST_UUID
    assert vcenters.all_vcenters(cfg) == [cfg.vcenter]
    assert vcenters.password_secret(cfg, cfg.vcenter) == VCENTER_PASSWORD
    assert vcenters.shipping_task_queue(cfg, cfg.vcenter) == cfg.temporal.shipping_task_queue
    assert vcenters.discovery_schedule_id(cfg, cfg.vcenter) == "snapship-discovery"
    assert shipping_queues(cfg) == {cfg.temporal.shipping_task_queue: 9}
    # A single-vCenter client routes every key to its one vCenter (old histories, harnesses).
    assert vcenters.find_vcenter(cfg, "client-made-up-uuid") is cfg.vcenter


def test_added_vcenters_round_trip_and_own_their_resources(tmp_path: Path) -> None:
    two_vcenters(tmp_path).save()
    cfg = ClientConfig.load(tmp_path)
    second = cfg.vcenters[0]
    assert second.name == "Berlin" and second.port == 8443
    for key in (SECOND_UUID, SECOND_UUID.lower(), "berlin", "vc2.example:8443"):
        assert vcenters.find_vcenter(cfg, key) == second, key
    assert vcenters.find_vcenter(cfg, "") == cfg.vcenter
    assert vcenters.find_vcenter(cfg, "vc1.example") == cfg.vcenter
    assert vcenters.find_vcenter(cfg, FIRST_UUID) == cfg.vcenter
    assert vcenters.password_secret(cfg, second) == f"vcenter_password.{SECOND_UUID.lower()}"
    assert vcenters.shipping_slots(cfg, second) == 3
    assert vcenters.shipping_slots(cfg, cfg.vcenter) == 7
    schedule = vcenters.discovery_schedule_id(cfg, second)
    assert schedule == f"snapship-discovery-{second.instance_uuid}"
    assert vcenters.discovery_interval_seconds(cfg, second) == 120
    assert vcenters.discovery_interval_seconds(cfg, cfg.vcenter) == 900
    queues = shipping_queues(cfg)
    # Each vCenter its own queue; slots are the worker's load bound, caps the coordinators'.
    assert queues == {
        cfg.temporal.shipping_task_queue: 7,
        f"{cfg.temporal.shipping_task_queue}.{second.instance_uuid}": 7,
    }
    assert permit_limits(cfg, second.instance_uuid).vcenter_vms == 3
    assert permit_limits(cfg, FIRST_UUID).vcenter_vms == 7
    assert permit_limits(cfg, second.instance_uuid).vcenter_vms == 3
    assert permit_limits(cfg, FIRST_UUID).vcenter_vms == 7
    assert vcenters.workflow_id_prefix(second) == f"snapship-{second.instance_uuid}-"


def test_an_unknown_vcenter_is_named_and_never_falls_back(tmp_path: Path) -> None:
    cfg = two_vcenters(tmp_path)
    with pytest.raises(vcenters.UnknownVcenter, match="Berlin"):
        vcenters.find_vcenter(cfg, "0000-removed")


def test_worker_deps_resolves_each_vcenter_and_refuses_a_removed_one(tmp_path: Path) -> None:
    cfg = two_vcenters(tmp_path)
    cfg.save()
    store = SecretStore(cfg.secrets_path)
    store.set(VCENTER_PASSWORD, "first-pw")
    store.set(vcenters.password_secret_name(SECOND_UUID), "second-pw")
    deps = WorkerDeps(cfg, secrets=store)
    assert deps.vcenter_settings(SECOND_UUID.lower()).host == "vc2.example"
    assert deps.vcenter_password(SECOND_UUID.lower()) == "second-pw"
    assert deps.vcenter_password() == "first-pw"
    assert deps.vcenter_password(FIRST_UUID) == "first-pw"
    # `snapship vcenter remove` rewrites config.json; a running worker follows it.
    cfg2 = ClientConfig.load(tmp_path)
    cfg2.vcenters = []
    cfg2.vcenters.append(VcenterSettings(host="vc3.example", instance_uuid="3333"))
    cfg2.save()
    with pytest.raises(VcenterNotConfigured) as err:
        deps.vcenter_settings(SECOND_UUID.lower())
    assert err.value.non_retryable
    assert "\n" not in str(err.value) and "vc3.example" in str(err.value)


def test_visibility_scope_keeps_single_clients_by_host_and_tells_several_apart_by_id(
    tmp_path: Path,
) -> None:
    cfg = two_vcenters(tmp_path)
    single = ClientConfig(data_dir=str(tmp_path), vcenter=cfg.vcenter)
    assert vcenters.visibility_scope(single, None) == ("vc1.example", [])
    host, extra = vcenters.visibility_scope(cfg, None)
    assert host == "" and extra == [
        f"(WorkflowId STARTS_WITH 'snapship-{FIRST_UUID}-' OR "
        f"WorkflowId STARTS_WITH 'snapship-{SECOND_UUID.lower()}-')"
    ]
    assert vcenters.visibility_scope(cfg, cfg.vcenters[0]) == (
        "vc2.example", [f"WorkflowId STARTS_WITH 'snapship-{SECOND_UUID.lower()}-'"]
    )


def test_discovery_refuses_a_vcenter_that_answers_with_another_identity() -> None:
    from temporalio.exceptions import ApplicationError

    from activities.discovery import check_same_vcenter

    vc = VcenterSettings(host="vc2.example", instance_uuid=SECOND_UUID.lower(), name="Berlin")
    check_same_vcenter(vc, SECOND_UUID)  # same vCenter, whatever the case
    check_same_vcenter(VcenterSettings(host="legacy"), FIRST_UUID)  # no recorded identity
    with pytest.raises(ApplicationError) as err:
        check_same_vcenter(vc, FIRST_UUID)
    assert err.value.non_retryable and err.value.type == "VcenterIdentityChanged"
    assert "Berlin" in str(err.value) and FIRST_UUID in str(err.value)
    assert "\n" not in str(err.value)
