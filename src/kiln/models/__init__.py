"""The model catalog: AIR identifiers mapped to local files, categories and defaults."""

from kiln.models.air import AIR, parse_air
from kiln.models.catalog import Catalog, CatalogEntry, ModelDefaults

__all__ = ["AIR", "Catalog", "CatalogEntry", "ModelDefaults", "parse_air"]
