"""No secret reaches a log line: registered values and credential patterns become ***."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapship.secrets import AWS_SECRET_ACCESS_KEY, VCENTER_PASSWORD, Secret, SecretStore
from snapship.telemetry.logs import configure_logging, make_handler, redact


class Captured:
    def __init__(self, logger: logging.Logger, stream: io.StringIO) -> None:
        self.logger = logger
        self.stream = stream

    def events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def text(self) -> str:
        return self.stream.getvalue()


@pytest.fixture
def captured(request: pytest.FixtureRequest) -> Iterator[Captured]:
    stream = io.StringIO()
    logger = logging.getLogger(f"snapship.test.{request.node.originalname}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = make_handler(stream)
    logger.addHandler(handler)
    try:
        yield Captured(logger, stream)
    finally:
        logger.removeHandler(handler)


def test_values_from_the_secret_store_are_masked_everywhere(
    tmp_path: Path, captured: Captured
) -> None:
    vc_password = "Vc-Pa55-registered-1"
    aws_secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzz-test1"
    store = SecretStore(tmp_path / "secrets.json")
    store.set(VCENTER_PASSWORD, vc_password)
    store.set(AWS_SECRET_ACCESS_KEY, aws_secret)
    log = captured.logger
    log.info("login with %s", vc_password)  # in args
    log.warning(f"connecting using {aws_secret} now")  # in the message itself
    log.info("extra fields too", extra={"detail": f"pw={vc_password}", "nested": [aws_secret]})
    try:
        try:
            raise ValueError(f"vCenter refused password {vc_password}")
        except ValueError as inner:
            raise RuntimeError(f"login failed for secret {aws_secret}") from inner
    except RuntimeError:
        log.exception("connection failed")
    text = captured.text()
    assert vc_password not in text and aws_secret not in text
    events = captured.events()
    assert events[0]["message"] == "login with ***"
    assert events[1]["message"] == "connecting using *** now"
    assert events[2]["detail"] == "pw=***" and events[2]["nested"] == ["***"]
    exc_text = str(events[3]["exception"])
    assert "Traceback" in exc_text and "RuntimeError: login failed for secret ***" in exc_text
    assert "ValueError: vCenter refused password ***" in exc_text  # the chained cause too


def test_secret_objects_and_new_values_are_masked(captured: Captured) -> None:
    value = "freshly-wrapped-" + "x9y8z7"
    wrapped = Secret(value)  # constructing a Secret registers its value
    captured.logger.info("as object %s %r and revealed %s", wrapped, wrapped, wrapped.reveal())
    [event] = captured.events()
    assert value not in captured.text()
    assert event["message"] == "as object *** Secret('***') and revealed ***"


@pytest.mark.parametrize(
    ("line", "leak"),
    [
        ("aws_secret_access_key=AbCdEfGh1234567890abcd", "AbCdEfGh1234567890abcd"),
        ("--aws-secret-access-key AbCd is bad but AWS_SECRET_ACCESS_KEY: 'q1w2e3r4'", "q1w2e3r4"),
        ('{"password": "hunter2!", "user": "admin"}', "hunter2!"),
        ("vcenter password=s3cr3t;next=1", "s3cr3t"),
        ("Authorization: Bearer eyJhbGciOi.abc", "eyJhbGciOi"),
        ("key id AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
        ("X-Amz-Security-Token=FwoGZXIvYXdzEBY", "FwoGZXIvYXdzEBY"),
    ],
)
def test_credential_patterns_are_masked(captured: Captured, line: str, leak: str) -> None:
    captured.logger.error("config: %s", line)
    assert leak not in captured.text()
    assert "***" in captured.events()[0]["message"]  # type: ignore[operator]
    assert leak not in redact(line)


def test_ordinary_text_is_untouched(captured: Captured) -> None:
    line = "snapshot snap-0123 of vm-42 completed, 1024 blocks, token count 3"
    captured.logger.info(line)
    assert captured.events()[0]["message"] == line


def test_configure_logging_protects_root_handlers(tmp_path: Path) -> None:
    root = logging.getLogger()
    before = list(root.handlers), root.level
    stream = io.StringIO()
    foreign_stream = io.StringIO()
    foreign = logging.StreamHandler(foreign_stream)  # e.g. configured by a library
    root.addHandler(foreign)
    try:
        configure_logging(logging.INFO, stream=stream)
        configure_logging(logging.INFO, stream=stream)  # idempotent: one JSON handler
        assert sum(h.get_name() == "snapship-json" for h in root.handlers) == 1
        Secret("root-level-secret-42")
        logging.getLogger("boto-ish").info("value root-level-secret-42 password=abc")
        assert "root-level-secret-42" not in stream.getvalue()
        assert "root-level-secret-42" not in foreign_stream.getvalue()
        assert "password=***" in foreign_stream.getvalue()
    finally:
        for handler in list(root.handlers):
            if handler not in before[0]:
                root.removeHandler(handler)
        root.setLevel(before[1])


def test_fast_precheck_covers_every_sensitive_key() -> None:
    # The substring pre-check must never skip a line the pair pattern would have masked.
    from snapship.telemetry import logs

    for key in logs._SENSITIVE_KEYS.split("|"):
        assert any(stem in key for stem in logs._KEYWORD_STEMS), key
        assert redact(f"{key.upper()}=abcd1234zz") == f"{key.upper()}=***"
