"""A JSON log line of a logged exception carries its type, message and traceback, not only
``"exc_info": true`` (what a Helm pod or a Ray shard logs is all anyone has to go on)."""

from __future__ import annotations

import orjson
import pytest
import structlog

from shardlet.logs import configure


def test_json_log_of_an_exception_has_type_message_and_frames(capsys: pytest.CaptureFixture[str]) -> None:
    configure("info", "json")
    try:
        try:
            {}["missing"]
        except KeyError:
            structlog.get_logger("t").exception("handler_failed", watch="pods")
        line = orjson.loads(capsys.readouterr().err.strip().splitlines()[-1])
    finally:
        structlog.reset_defaults()
    assert line["event"] == "handler_failed" and line["watch"] == "pods"
    exc = line["exception"][0]
    assert exc["exc_type"] == "KeyError" and exc["exc_value"] == "'missing'"
    assert any(f["name"] == "test_json_log_of_an_exception_has_type_message_and_frames" for f in exc["frames"])
