"""The services' declarations and the catalogue the API reads."""

from __future__ import annotations

from typing import Any

import pytest

from controller.api import schemas as sc
from controller.db.models import RESOURCES
from controller.declarations import Action, CascadeStep, Catalogue, Create
from controller.services.catalogue import CATALOGUE


def _fn(*_: Any) -> Any:
    raise AssertionError("not called")


def test_a_key_declared_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        Catalogue.collect([Action("vms", "start", sc.EmptyAction, _fn)],
                          [Action("vms", "start", sc.MigrateAction, _fn)])


def test_the_catalogue_cannot_be_changed_once_collected() -> None:
    catalogue = Catalogue.collect([Create("zones", sc.ZoneCreate, _fn)])
    with pytest.raises(TypeError):
        catalogue.creates["clusters"] = Create("clusters", sc.ClusterCreate, _fn)  # type: ignore[index]


def test_every_declaration_names_a_collection_of_the_api() -> None:
    collections = {*RESOURCES, "tags"}
    assert set(CATALOGUE.creates) <= collections
    assert set(CATALOGUE.updates) <= collections
    assert {c for c, _ in CATALOGUE.actions} <= collections
    assert {c for c, _ in CATALOGUE.cascade} <= collections


def test_cascade_steps_are_collected_by_collection_and_action() -> None:
    catalogue = Catalogue.collect([CascadeStep("vms", "delete", _fn)])
    assert catalogue.cascade[("vms", "delete")] is _fn
