"""The query parser and SQL it builds (no database needed)."""

from __future__ import annotations

import pytest
from werkzeug.datastructures import MultiDict

from controller.db.jobs import Job
from controller.db.models import Vm
from controller.errors import BadRequest
from controller.query import parse, parse_condition, run, where_clause


@pytest.mark.parametrize("text,path,op,value", [
    ("state=Running", ["state"], "=", "Running"),
    ("memorySize>=1024", ["memorySize"], ">=", "1024"),
    ("name~=web%", ["name"], "~=", "web%"),
    ("state!?=Running,Stopped", ["state"], "!?=", "Running,Stopped"),
    ("host.cluster.name=c=1", ["host", "cluster", "name"], "=", "c=1"),
    ("description!=null", ["description"], "!=", "null"),
])
def test_parse_condition(text: str, path: list[str], op: str, value: str) -> None:
    c = parse_condition(text)
    assert (c.path, c.op, c.value) == (path, op, value)


def test_sql_uses_subqueries_for_relations() -> None:
    q = parse(MultiDict([("q", "host.name=h1"), ("q", "tag=web"), ("q", "cpuNum>1")]))
    sql = " AND ".join(str(w) for w in where_clause(Vm, q.conditions))
    assert "vms.host_uuid IN (SELECT hosts.uuid" in sql
    assert "vms.uuid IN (SELECT tags.resource_uuid" in sql
    assert "vms.cpu_num >" in sql


def test_paging_defaults_and_limits() -> None:
    q = parse(MultiDict([("sort", "-createDate,name")]))
    assert (q.limit, q.offset, q.sort) == (1000, 0, [("createDate", True), ("name", False)])
    with pytest.raises(BadRequest):
        parse(MultiDict([("limit", "1000001")]))


@pytest.mark.parametrize("text", ["memorySize=" + "9" * 30, "cpuNum?=1," + "9" * 20, f"cpuNum<{-(2**63) - 1}"])
def test_integers_beyond_64_bits_are_a_400_not_a_driver_overflow(text: str) -> None:
    q = parse(MultiDict([("q", text)]))
    with pytest.raises(BadRequest) as e:
        where_clause(Vm, q.conditions)
    assert e.value.details["field"] in text


def test_an_offset_beyond_64_bits_is_a_400() -> None:
    with pytest.raises(BadRequest) as e:
        parse(MultiDict([("offset", "9" * 30)]))
    assert e.value.details["field"] == "offset"


@pytest.mark.parametrize("text", ["result=x", "error~=%x%", "result>1", "error?=a,b"])
def test_json_attributes_compare_only_with_null(text: str) -> None:
    """PostgreSQL has no equality, order or LIKE on json: a 400, not a database error."""
    q = parse(MultiDict([("q", text)]))
    with pytest.raises(BadRequest) as e:
        where_clause(Job, q.conditions)
    assert e.value.details["field"] in text
    assert where_clause(Job, parse(MultiDict([("q", "result!=null")])).conditions)


def test_json_attributes_cannot_be_sorted_on() -> None:
    with pytest.raises(BadRequest) as e:  # refused while the statement is built, before any SQL
        run(None, Job, parse(MultiDict([("sort", "-result")])))  # type: ignore[arg-type]
    assert e.value.details["field"] == "sort"
