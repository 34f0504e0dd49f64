"""One JSON event per line with the bound source_server/run_id and extra fields."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from datetime import datetime

from snapship.telemetry.logs import (
    bind_context,
    current_context,
    log_context,
    make_handler,
    unbind_context,
)


def _logger(name: str) -> tuple[logging.Logger, io.StringIO, logging.Handler]:
    stream = io.StringIO()
    logger = logging.getLogger(f"snapship.jsontest.{name}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = make_handler(stream)
    logger.addHandler(handler)
    return logger, stream, handler


def _events(stream: io.StringIO) -> list[dict[str, object]]:
    lines = stream.getvalue().splitlines()
    return [json.loads(line) for line in lines]


def test_event_fields_and_context_binding() -> None:
    logger, stream, handler = _logger("fields")
    try:
        logger.info("unbound %d", 1)
        with log_context(source_server="s-1a2b", run_id="run-7"):
            logger.warning("in run", extra={"disk_key": 2000, "blocks": 12})
            with log_context(run_id="run-8", phase="ship"):
                logger.debug("nested")
            logger.error("back")
        logger.info("after")
    finally:
        logger.removeHandler(handler)
    events = _events(stream)
    assert len(events) == 5  # exactly one line per event
    first = events[0]
    assert set(first) == {"time", "level", "logger", "message", "source_server", "run_id"}
    assert first["message"] == "unbound 1" and first["level"] == "INFO"
    assert first["source_server"] is None and first["run_id"] is None
    assert first["logger"] == "snapship.jsontest.fields"
    assert datetime.fromisoformat(str(first["time"])).utcoffset() is not None
    assert events[1]["source_server"] == "s-1a2b" and events[1]["run_id"] == "run-7"
    assert events[1]["disk_key"] == 2000 and events[1]["blocks"] == 12
    assert events[2]["run_id"] == "run-8" and events[2]["phase"] == "ship"
    assert events[2]["level"] == "DEBUG"
    assert events[3]["run_id"] == "run-7" and "phase" not in events[3]
    assert events[4]["source_server"] is None


def test_multiline_messages_stay_one_line() -> None:
    logger, stream, handler = _logger("multiline")
    try:
        logger.info("line one\nline two")
        try:
            raise KeyError("k")
        except KeyError:
            logger.exception("with traceback")
    finally:
        logger.removeHandler(handler)
    assert len(stream.getvalue().splitlines()) == 2
    events = _events(stream)
    assert events[0]["message"] == "line one\nline two"
    assert "KeyError" in str(events[1]["exception"])


async def test_context_follows_asyncio_tasks() -> None:
    async def child() -> object:
        await asyncio.sleep(0)
        return current_context().get("source_server")

    token = bind_context(source_server="s-async")
    try:
        task = asyncio.create_task(child())
    finally:
        unbind_context(token)
    assert await task == "s-async"
    assert "source_server" not in current_context()
