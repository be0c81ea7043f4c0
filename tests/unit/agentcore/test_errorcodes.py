"""The error-code table: one status per code, used by every agent's error classes and
HTTP errors, and listed as it is in ``docs/protocol.md``."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from agentcore.config import AgentConfig
from agentcore.errorcodes import CODES, code_for_http_error, markdown_table
from agentcore.errors import AgentError, CodedError
from agentcore.models import Command, Reply, Returns
from agentcore.plugin import Plugin, command
from agentcore.serve import build
from agentcore.task import TaskContext

ROOT = Path(__file__).resolve().parents[3]
AGENT_PACKAGES = ("agentcore", "kvmagent", "storageagent", "sftpbackup", "cephagent", "simulator")
TOKEN = "unit-token-0123456789"
DOC_SECTION = re.compile(r"<!-- error codes: .*? -->\n(.*?)<!-- end of error codes -->", re.S)


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _error_modules(packages: tuple[str, ...]) -> list[str]:
    """The modules that define an error class (a class body with ``code = "..."``)."""
    found = []
    for pkg in packages:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if re.search(r'^    code = "', path.read_text(), re.M):
                found.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return found


def test_the_table_has_one_http_status_and_a_meaning_per_code() -> None:
    for code, row in CODES.items():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]+", code), code
        assert 400 <= row.status < 600 and row.meaning and "\n" not in row.meaning, code


def test_every_agent_error_class_answers_with_its_codes_status() -> None:
    for module in _error_modules(AGENT_PACKAGES):
        importlib.import_module(module)
    classes = [c for c in _subclasses(AgentError) if c.__module__.split(".")[0] in AGENT_PACKAGES]
    assert {c.code for c in classes} >= {"CEPH_TIMEOUT", "LIBVIRT_ERROR", "STORE_MISMATCH",
                                         "STORAGE_NOT_READY", "INSUFFICIENT_CAPACITY", "URL_REFUSED"}
    for cls in [AgentError, *classes]:
        assert cls.http_status == CODES[cls.code].status, cls


def test_a_class_may_name_neither_a_code_outside_the_table_nor_a_status_of_its_own() -> None:
    with pytest.raises(TypeError, match="NOT_A_CODE is not in the code table"):
        type("Unlisted", (AgentError,), {"code": "NOT_A_CODE"})
    with pytest.raises(TypeError, match="do not set http_status"):
        type("OwnStatus", (AgentError,), {"code": "IN_USE", "http_status": 418})
    assert issubclass(AgentError, CodedError)


def test_the_protocol_doc_lists_exactly_the_table() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text()
    section = DOC_SECTION.search(doc)
    assert section is not None, "docs/protocol.md lost its generated error-code section"
    assert section[1] == markdown_table(), "regenerate it: python -m agentcore.errorcodes"
    assert re.findall(r"^\| `([A-Z0-9_]+)` \|", section[1], re.M) == list(CODES)


def test_http_errors_of_the_framework_get_a_code_of_the_table() -> None:
    assert code_for_http_error(404) == "NOT_FOUND" and code_for_http_error(413) == "REQUEST_ENTITY_TOO_LARGE"
    assert code_for_http_error(415) == "INVALID_REQUEST" and code_for_http_error(502) == "INTERNAL_ERROR"
    for status in (400, 401, 404, 405, 409, 413, 415, 418, 500, 503):
        assert code_for_http_error(status) in CODES


class NoopCmd(Command, Returns[Reply], path="/t/noop"):
    """Nothing to do."""


class NoopPlugin(Plugin):
    """One command that does nothing."""

    @command()
    def noop(self, ctx: TaskContext, cmd: NoopCmd) -> Reply:
        """Do nothing."""
        return Reply()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[FlaskClient]:
    config = AgentConfig(token=TOKEN, state_dir=tmp_path)  # type: ignore[arg-type]
    runtime, app = build("unit", config, [NoopPlugin()])
    app.config["MAX_CONTENT_LENGTH"] = 1024
    yield app.test_client()
    runtime.stop()


def test_an_agents_protocol_errors_use_the_tables_status(client: FlaskClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    answers = [
        client.post("/t/noop", json={}),  # no token
        client.post("/t/nope", json={}, headers=auth),
        client.get("/t/noop", headers=auth),
        client.post("/t/noop", data="{" + " " * 4096 + "}", headers=auth),
        client.post("/t/noop", json={"unknown": 1}, headers=auth),
        client.get("/tasks/no-such-task", headers=auth),
    ]
    codes = [r.get_json()["error"]["code"] for r in answers]
    assert codes == ["UNAUTHORIZED", "NOT_FOUND", "METHOD_NOT_ALLOWED", "REQUEST_ENTITY_TOO_LARGE",
                     "INVALID_REQUEST", "NOT_FOUND"]
    for r, code in zip(answers, codes, strict=True):
        assert r.status_code == CODES[code].status, code
        assert r.get_json()["success"] is False and set(r.get_json()["error"]) == {"code", "message", "details"}
