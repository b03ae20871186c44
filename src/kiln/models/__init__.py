"""The model catalog: AIR identifiers mapped to local files, categories and defaults."""

from kiln.models.air import AIR, parse_air
from kiln.models.catalog import Catalog, CatalogEntry, ModelDefaults
from kiln.models.checkpoints import ModelKind, UnrecognisedModelError, inspect_model
from kiln.models.importer import import_folder

__all__ = [
    "AIR",
    "Catalog",
    "CatalogEntry",
    "ModelDefaults",
    "ModelKind",
    "UnrecognisedModelError",
    "import_folder",
    "inspect_model",
    "parse_air",
]
