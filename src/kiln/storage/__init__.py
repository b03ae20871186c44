"""Persistent state: the SQLite database shared by keys, catalog, images and task records."""

from kiln.storage.database import Database

__all__ = ["Database"]
