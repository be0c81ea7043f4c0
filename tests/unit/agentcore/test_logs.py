import json
import logging

from agentcore.logs import JsonFormatter, add_secret, current_task


def fmt(msg: str, *args: object) -> dict:
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, msg, args, None)
    return json.loads(JsonFormatter().format(rec))


def test_json_lines_carry_the_task_id() -> None:
    token = current_task.set("task-42")
    try:
        assert fmt("hello %s", "world") | {"time": None} == {
            "time": None, "level": "INFO", "logger": "x", "task": "task-42", "message": "hello world"}
    finally:
        current_task.reset(token)


def test_secrets_are_masked() -> None:
    add_secret("s3cr3t-value-123")
    line = fmt("connecting with s3cr3t-value-123 and password=hunter2 and {'key': 'AQB=='}")
    assert "s3cr3t-value-123" not in line["message"]
    assert "hunter2" not in line["message"] and "AQB==" not in line["message"]
