"""The rows of the model catalog: stored, replaced by AIR, listed in AIR order, removed."""

from __future__ import annotations

from kiln.storage import CatalogRepository


def row(air: str, **changes: object) -> dict[str, object]:
    return {"air": air, "name": air.split(":")[1], "version": "1", "category": "checkpoint",
            "type": "base", "architecture": "sd1x", "path": f"/models/{air}", "config_path": None,
            "tags": "[]", "conditioning": None, "comment": "", "defaults": "{}",
            "created_at": 1.0, **changes}


def test_models_are_stored_replaced_listed_and_removed(db):
    catalog = CatalogRepository(db)
    catalog.put(row("kiln:b@1"))
    catalog.put(row("kiln:a@1"))
    assert catalog.get("kiln:a@1") == row("kiln:a@1")
    catalog.put(row("kiln:a@1", name="renamed", tags='["new"]'))
    assert [model["air"] for model in catalog.all()] == ["kiln:a@1", "kiln:b@1"]
    assert catalog.get("kiln:a@1") == row("kiln:a@1", name="renamed", tags='["new"]')
    assert catalog.remove("kiln:a@1") and not catalog.remove("kiln:a@1")
    assert catalog.get("kiln:a@1") is None and len(catalog.all()) == 1
