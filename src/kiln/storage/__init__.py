"""Persistent state, and all of Kiln's SQL: keys, catalog, image index, task records, admission
tickets and fronts, in SQLite (the default) or PostgreSQL, behind one `Database` handle."""

from kiln.storage.admission import AdmissionRepository, InFlight
from kiln.storage.catalog import CatalogRepository
from kiln.storage.database import Database, database_url
from kiln.storage.fronts import HEARTBEAT_INTERVAL_S, STALE_AFTER_S, FrontRepository
from kiln.storage.images import ImageIndex
from kiln.storage.keys import KeyRepository, StoredKey, StoredUsage
from kiln.storage.migrations import LATEST as SCHEMA_VERSION
from kiln.storage.migrations import SchemaTooNewError
from kiln.storage.tasks import StoredTask, TaskRepository

__all__ = [
    "HEARTBEAT_INTERVAL_S",
    "SCHEMA_VERSION",
    "STALE_AFTER_S",
    "AdmissionRepository",
    "CatalogRepository",
    "Database",
    "FrontRepository",
    "ImageIndex",
    "InFlight",
    "KeyRepository",
    "SchemaTooNewError",
    "StoredKey",
    "StoredTask",
    "StoredUsage",
    "TaskRepository",
    "database_url",
]
