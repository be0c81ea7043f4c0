"""Click options generated from an API body model, and the body built back.

Every field of the model becomes an option named after it (``cpu_num`` →
``--cpu-num``); a field naming another resource (``image_uuid``) also takes
the short name (``--image``) and accepts a name or a UUID; list fields repeat
(``--l3 pub --l3 priv``); booleans are ``--x/--no-x``; literals are choices;
nested models are JSON. The body is validated with the same model before it
is sent, so a mistake is reported naming the field without a round trip.
"""

from __future__ import annotations

import enum
import inspect
import json
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

import click
from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from controller.cli.catalog import FIELD_ALIASES, FIELD_COLLECTION
from controller.cli.client import ApiClient

SKIP = {"timeout"}


@dataclass(frozen=True)
class FieldOption:
    """How one model field appears on the command line."""

    name: str  # the Python field name, also the click parameter name
    option: click.Option
    collection: str | None  # the collection its values name, when it references one
    json_value: bool


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the inner type, whether it is a list) of ``X | None`` / ``list[X]``."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    if origin in (list, set, tuple):
        args: tuple[Any, ...] = typing.get_args(annotation)
        inner, _ = _unwrap(args[0]) if args else (str, False)
        return inner, True
    return annotation, False


def _click_type(inner: Any) -> tuple[Any, bool]:  # noqa: PLR0911 - one return per type family
    """(a click type, whether the value is JSON)."""
    if typing.get_origin(inner) is Literal:
        return click.Choice([str(a) for a in typing.get_args(inner)]), False
    if inspect.isclass(inner):
        if issubclass(inner, bool):
            return click.BOOL, False
        if issubclass(inner, enum.Enum):
            return click.Choice([str(m.value) for m in inner]), False
        if issubclass(inner, int):
            return click.INT, False
        if issubclass(inner, float):
            return click.FLOAT, False
        if issubclass(inner, str):
            return click.STRING, False
    return click.STRING, True  # nested models, dicts: JSON text


def _reference(name: str) -> tuple[str | None, str]:
    """(the collection, the stem) of ``x_uuid`` / ``x_uuids`` fields."""
    for suffix in ("_uuids", "_uuid"):
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            return FIELD_COLLECTION.get(stem), stem
    return None, name


def field_option(name: str, info: FieldInfo) -> FieldOption:
    inner, many = _unwrap(info.annotation)
    collection, stem = _reference(name)
    flag = name.replace("_", "-")
    names = [f"--{flag}"]
    if collection is not None:
        names = [f"--{stem.replace('_', '-')}", *[f"--{a}" for a in FIELD_ALIASES.get(stem, [])],
                 *names]
    ctype, is_json = _click_type(inner)
    help_text = (info.description or "").strip()
    if collection is not None:
        help_text = f"{help_text} (name or UUID of {collection})".strip()
    if ctype is click.BOOL and not many:
        opt = click.Option([f"--{flag}/--no-{flag}", name], default=None, help=help_text or None)
        return FieldOption(name, opt, None, False)
    if info.is_required():
        help_text = f"[required] {help_text}".strip()
    if is_json:
        help_text = f"{help_text} (JSON)".strip()
    opt = click.Option([*names, name], type=ctype, multiple=many, default=None,
                       help=help_text or None)
    return FieldOption(name, opt, collection, is_json)


def model_options(model: type[BaseModel] | None) -> list[FieldOption]:
    """The options of every field of ``model`` (none without a model)."""
    if model is None:
        return []
    return [field_option(n, i) for n, i in model.model_fields.items() if n not in SKIP]


def parse_sets(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``--set key=value`` (value parsed as JSON when it is JSON)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint="--set")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def build_body(client: ApiClient, model: type[BaseModel] | None, fields: list[FieldOption],
               values: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The wire body from the options given, names resolved, checked by ``model``."""
    body: dict[str, Any] = {}
    for f in fields:
        value = values.get(f.name)
        if value is None or value == ():
            continue
        if f.json_value:
            value = _json(f.name, value)
        if f.collection is not None:
            coll = f.collection
            value = ([client.resolve(coll, v) for v in value] if isinstance(value, tuple | list)
                     else client.resolve(coll, value))
        elif isinstance(value, tuple):
            value = list(value)
        body[to_camel(f.name)] = value
    body.update(extra)
    if model is not None:
        try:
            model.model_validate(body)
        except ValidationError as e:
            raise click.UsageError(_describe(e)) from None
    return body


def _json(name: str, value: Any) -> Any:
    try:
        if isinstance(value, tuple | list):
            return [json.loads(v) for v in value]
        return json.loads(value)
    except ValueError as e:
        raise click.BadParameter(f"not JSON: {e}", param_hint=f"--{name.replace('_', '-')}") from None


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(to_camel(p) if isinstance(p, str) else str(p) for p in e["loc"]) or "body"
        parts.append(f"{loc}: {e['msg']}")
    return "invalid request: " + "; ".join(parts[:5])
