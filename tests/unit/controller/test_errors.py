"""One status per error code, everywhere: every code the code base raises, sends or reads
is in a table, and the API answers with the table's status."""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

from agentcore.errorcodes import CODES as AGENT_CODES
from controller.errors import API_CODES, CONTROLLER_CODES, ApiError, for_http_status
from tests.unit.controller.harness import AGENT_TOKEN, Cloud

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("agentcore", "kvmagent", "storageagent", "sftpbackup", "cephagent", "controller", "simulator")
CODE = re.compile(r"[A-Z][A-Z0-9_]+")


def _code(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and CODE.fullmatch(node.value):
        return node.value
    return None


def _name(node: ast.AST) -> str:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def _codes_in(tree: ast.AST) -> Iterator[str]:
    """The string literals used as error codes: ``code = "X"`` in a class, ``{"code": "X"}``,
    ``SomeError("X", ...)``, ``code=...`` arguments and ``e.code == "X"`` tests."""
    for node in ast.walk(tree):
        found: list[ast.AST | None] = []
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(_name(t) == "code" for t in targets):
                value = node.value
                if isinstance(value, ast.Call):  # a model field: code: str = Field(default="X")
                    found += [k.value for k in value.keywords if k.arg == "default"]
                else:
                    found.append(value)
        elif isinstance(node, ast.Dict):
            found += [v for k, v in zip(node.keys, node.values, strict=True) if _code(k) is None
                      and isinstance(k, ast.Constant) and k.value == "code"]
        elif isinstance(node, ast.Call):
            if _name(node.func).endswith("Error") and node.args:
                found.append(node.args[0])
            found += [k.value for k in node.keywords if k.arg == "code"]
        elif isinstance(node, ast.Compare) and _name(node.left) == "code":
            found += node.comparators
        yield from (c for c in map(_code, found) if c is not None)


def _used_codes() -> dict[str, list[str]]:
    used: dict[str, list[str]] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for code in _codes_in(ast.parse(path.read_text(), str(path))):
                used.setdefault(code, []).append(str(path.relative_to(ROOT)))
    return used


def test_every_code_raised_sent_or_read_in_the_code_base_is_in_a_table() -> None:
    used = _used_codes()
    # the scan sees each way a code is written down
    assert {"CEPH_TIMEOUT", "CONTROLLER_RESTARTED", "AGENT_UNREACHABLE", "IMAGE_EXISTS",
            "SIMULATED_FAILURE", "DEPLOY_FAILED"} <= used.keys()
    missing = {code: where for code, where in used.items() if code not in API_CODES}
    assert not missing, f"codes in no table (agentcore/errorcodes.py, controller/errors.py): {missing}"


def test_the_controllers_own_codes_are_none_of_the_agents() -> None:
    assert not CONTROLLER_CODES.keys() & AGENT_CODES.keys()
    assert {c: API_CODES[c] for c in AGENT_CODES} == dict(AGENT_CODES)


def test_every_api_error_class_answers_with_its_codes_status() -> None:
    for module in ("controller.errors", "controller.services.deploying"):
        importlib.import_module(module)
    stack: list[type[ApiError]] = [ApiError]
    while stack:
        cls = stack.pop()
        assert cls.http_status == API_CODES[cls.code].status, cls
        stack.extend(cls.__subclasses__())
    assert for_http_status(405, "no").http_status == 405


def test_the_apis_errors_use_the_tables_status(cloud: Cloud) -> None:
    answers = [
        cloud.call("GET", "/v1/zones", token="wrong"),
        cloud.call("GET", "/v1/no-such-collection"),
        cloud.call("PUT", "/v1/zones"),
        cloud.call("POST", "/v1/zones", {"name": 7}),
    ]
    client, agent = cloud.client, {"Authorization": f"Bearer {AGENT_TOKEN}"}
    callbacks = [
        client.get("/v1/agent-callbacks", headers=agent),
        client.post("/v1/agent-callbacks", json={}),
        client.post("/v1/agent-callbacks", data=b"{}", headers=agent,
                    environ_overrides={"CONTENT_LENGTH": str(8 << 20)}),
        client.post("/v1/agent-callbacks", data=b"not json", headers={**agent, "taskuuid": "t1"}),
        client.post(f"/v1/agent-events/{'0' * 32}", json={}, headers=agent),  # no agent of that host
    ]
    answers += [(r.status_code, r.get_json()) for r in callbacks]
    codes = [body["error"]["code"] for _, body in answers]
    assert codes == ["UNAUTHORIZED", "NOT_FOUND", "METHOD_NOT_ALLOWED", "INVALID_REQUEST",
                     "METHOD_NOT_ALLOWED", "UNAUTHORIZED", "REQUEST_ENTITY_TOO_LARGE", "INVALID_REQUEST",
                     "FORBIDDEN"]
    for (status, _), code in zip(answers, codes, strict=True):
        assert status == API_CODES[code].status, code
