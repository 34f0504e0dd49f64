"""End to end on the dev server: histories hold only ciphertext; traces nest across Temporal.

A tiny workflow + activity run through a client built with snapship's codec and tracing
interceptor. The history fetched from the server must contain no plaintext payload (every
payload is `binary/encrypted`, the marker string appears nowhere in the raw history bytes), the
result must still decode for the client that holds the key, and the spans must chain
client -> workflow -> activity -> our own span inside the activity.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import HeaderCodecBehavior
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from snapship.codec import ENCODING, EncryptionCodec, KeyRing, data_converter
    from snapship.codec_server import start_codec_server
    from snapship.secrets import Secret
    from snapship.telemetry.tracing import capture_spans, span, temporal_tracing_interceptor

MARKER = "PLAINTEXT-MARKER-e2e-vm-0815"


@activity.defn
async def enc_activity(text: str) -> str:
    with span("vcenter.CreateSnapshot", vm="vm-0815"):
        return f"{text}|activity-saw-it"


@workflow.defn
class EncWorkflow:
    @workflow.run
    async def run(self, text: str) -> str:
        result = await workflow.execute_activity(
            enc_activity, text, start_to_close_timeout=timedelta(seconds=30)
        )
        return f"{result}|workflow-done"


SECRET = "e2e-Secret-Value-93ab1"


@activity.defn
async def failing_activity(text: str) -> str:
    raise ApplicationError(f"{text}: vCenter said no to {SECRET}", non_retryable=True)


@workflow.defn
class FailingWorkflow:
    @workflow.run
    async def run(self, text: str) -> str:
        try:
            await workflow.execute_activity(
                failing_activity, text, start_to_close_timeout=timedelta(seconds=30)
            )
        except ActivityError as err:
            assert isinstance(err.cause, ApplicationError)
            return err.cause.message
        return "not reached"


@workflow.defn
class FailingInWorkflow:
    @workflow.run
    async def run(self, text: str) -> str:
        raise ApplicationError(f"{text}: workflow gave up on {SECRET}", non_retryable=True)


def _payloads(message: Message) -> list[Payload]:
    """Every Payload anywhere inside a protobuf message (inputs, results, headers, memo...)."""
    found: list[Payload] = []
    if isinstance(message, Payload):
        return [message]
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            items: list[Any] = list(value.values())
        elif isinstance(value, Message):
            items = [value]
        else:  # repeated message field
            items = list(value)
        for item in items:
            if isinstance(item, Message):
                found.extend(_payloads(item))
    return found


async def test_history_is_encrypted_and_spans_nest(temporal_env: WorkflowEnvironment) -> None:
    config = temporal_env.client.service_client.config
    client = await Client.connect(
        config.target_host,
        namespace=temporal_env.client.namespace,
        data_converter=data_converter(KeyRing.generate("e2e")),
        interceptors=[temporal_tracing_interceptor()],
        header_codec_behavior=HeaderCodecBehavior.CODEC,
    )
    task_queue = f"enc-{uuid.uuid4()}"
    with capture_spans() as exporter:
        async with Worker(
            client, task_queue=task_queue, workflows=[EncWorkflow], activities=[enc_activity]
        ):
            handle = await client.start_workflow(
                EncWorkflow.run, MARKER, id=f"enc-{uuid.uuid4()}", task_queue=task_queue
            )
            result = await handle.result()
    assert result == f"{MARKER}|activity-saw-it|workflow-done"

    # -- the server holds ciphertext only
    history = await handle.fetch_history()
    raw = b"".join(event.SerializeToString() for event in history.events)
    assert MARKER.encode() not in raw
    payloads = [p for event in history.events for p in _payloads(event)]
    # workflow input + activity input + activity result + workflow result, plus headers
    assert len(payloads) >= 4
    for payload in payloads:
        assert payload.metadata["encoding"] == ENCODING
        assert payload.metadata["encryption-key-id"] == b"e2e"
    # ... and a client without the key cannot read the result
    with pytest.raises(KeyError, match="binary/encrypted") as info:
        await temporal_env.client.get_workflow_handle(handle.id).result()
    assert MARKER not in str(info.value)

    # -- traces: the client's StartWorkflow span is the root; the workflow's (zero-length)
    # RunWorkflow/CompleteWorkflow spans and the StartActivity span hang under it, as the
    # legacy TracingInterceptor parents workflow-side spans to the incoming context; the
    # activity's RunActivity is under StartActivity, and our span() inside the activity under
    # RunActivity. One trace id throughout.
    spans = exporter.get_finished_spans()
    by_name = {s.name: s for s in spans}
    names = sorted(by_name)
    assert len(by_name) == len(spans), names
    expected_parent = {
        "RunWorkflow:EncWorkflow": "StartWorkflow:EncWorkflow",
        "StartActivity:enc_activity": "StartWorkflow:EncWorkflow",
        "CompleteWorkflow:EncWorkflow": "StartWorkflow:EncWorkflow",
        "RunActivity:enc_activity": "StartActivity:enc_activity",
        "vcenter.CreateSnapshot": "RunActivity:enc_activity",
    }
    assert set(by_name) == {*expected_parent, "StartWorkflow:EncWorkflow"}, names
    root = by_name["StartWorkflow:EncWorkflow"]
    assert root.parent is None
    for child_name, parent_name in expected_parent.items():
        child, parent = by_name[child_name], by_name[parent_name]
        assert child.parent is not None, child_name
        assert child.parent.span_id == parent.context.span_id, (child_name, parent_name)
        assert child.context.trace_id == root.context.trace_id
    ours = by_name["vcenter.CreateSnapshot"]
    assert ours.attributes is not None and ours.attributes["snapship.vm"] == "vm-0815"


async def test_failure_messages_are_redacted_and_encrypted(
    temporal_env: WorkflowEnvironment,
) -> None:
    Secret(SECRET)  # the worker knows this value from its secret store
    client = await Client.connect(
        temporal_env.client.service_client.config.target_host,
        namespace=temporal_env.client.namespace,
        data_converter=data_converter(KeyRing.generate("e2e-fail")),
    )
    task_queue = f"fail-{uuid.uuid4()}"
    async with Worker(
        client, task_queue=task_queue, workflows=[FailingWorkflow], activities=[failing_activity]
    ):
        handle = await client.start_workflow(
            FailingWorkflow.run, MARKER, id=f"fail-{uuid.uuid4()}", task_queue=task_queue
        )
        result = await handle.result()
    # the key holder reads the message, with the secret masked
    assert result == f"{MARKER}: vCenter said no to ***"
    history = await handle.fetch_history()
    raw = b"".join(event.SerializeToString() for event in history.events)
    assert MARKER.encode() not in raw and SECRET.encode() not in raw
    failed = [e for e in history.events if e.HasField("activity_task_failed_event_attributes")]
    assert len(failed) == 1
    failure = failed[0].activity_task_failed_event_attributes.failure
    assert failure.message == "Encoded failure" and failure.stack_trace == ""
    assert failure.encoded_attributes.metadata["encoding"] == ENCODING


async def test_workflow_failures_are_redacted_too(temporal_env: WorkflowEnvironment) -> None:
    Secret(SECRET)
    client = await Client.connect(
        temporal_env.client.service_client.config.target_host,
        namespace=temporal_env.client.namespace,
        data_converter=data_converter(KeyRing.generate("e2e-wf-fail")),
    )
    task_queue = f"wffail-{uuid.uuid4()}"
    async with Worker(client, task_queue=task_queue, workflows=[FailingInWorkflow]):
        handle = await client.start_workflow(
            FailingInWorkflow.run, MARKER, id=f"wffail-{uuid.uuid4()}", task_queue=task_queue
        )
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    cause = info.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.message == f"{MARKER}: workflow gave up on ***"
    history = await handle.fetch_history()
    raw = b"".join(event.SerializeToString() for event in history.events)
    assert MARKER.encode() not in raw and SECRET.encode() not in raw


def _first_input(show_json: str) -> tuple[bytes, bytes]:
    """(encoding, data) of the workflow input in `temporal workflow show --output json`."""
    first = json.loads(show_json)["events"][0]
    [payload] = first["workflowExecutionStartedEventAttributes"]["input"]["payloads"]
    return base64.b64decode(payload["metadata"]["encoding"]), base64.b64decode(payload["data"])


async def _temporal_cli(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("temporal")),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_temporal_cli_reads_and_writes_through_the_codec_server(
    temporal_env: WorkflowEnvironment,
) -> None:
    """The real `temporal` CLI with --codec-endpoint: /encode for inputs, /decode for history."""
    keyring = KeyRing.generate("cli")
    codec_server = start_codec_server(EncryptionCodec(keyring))
    target = temporal_env.client.service_client.config.target_host
    namespace = temporal_env.client.namespace
    connection = ["--address", target, "--namespace", namespace]
    codec = ["--codec-endpoint", codec_server.url]
    client = await Client.connect(
        target, namespace=namespace, data_converter=data_converter(keyring)
    )
    task_queue = f"cli-{uuid.uuid4()}"
    workflow_id = f"cli-{uuid.uuid4()}"
    try:
        async with Worker(
            client, task_queue=task_queue, workflows=[EncWorkflow], activities=[enc_activity]
        ):
            await _temporal_cli(
                "workflow",
                "start",
                "--type",
                "EncWorkflow",
                "--task-queue",
                task_queue,
                "--workflow-id",
                workflow_id,
                "--input",
                json.dumps(MARKER),
                *connection,
                *codec,
            )
            handle = client.get_workflow_handle(workflow_id)
            assert await handle.result() == f"{MARKER}|activity-saw-it|workflow-done"
        history = await handle.fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        [sent] = started.input.payloads
        assert sent.metadata["encoding"] == ENCODING  # the CLI encrypted it via /encode
        assert sent.metadata["encryption-key-id"] == b"cli"
        decoded = await _temporal_cli(
            "workflow",
            "show",
            "--workflow-id",
            workflow_id,
            "--output",
            "json",
            *connection,
            *codec,
        )
        assert _first_input(decoded) == (b"json/plain", json.dumps(MARKER).encode())
        raw = await _temporal_cli(
            "workflow", "show", "--workflow-id", workflow_id, "--output", "json", *connection
        )
        encoding, data = _first_input(raw)
        assert encoding == ENCODING and MARKER.encode() not in data
    finally:
        codec_server.stop()
