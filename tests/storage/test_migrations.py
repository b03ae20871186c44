"""Versioned migrations: a new database gets the schema of `kiln.storage.schema`, an old data
directory is adopted with its rows, a database is migrated once however many fronts open it,
and one from a newer Kiln is refused."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from sqlalchemy import create_engine, inspect, select

from kiln.storage import (
    SCHEMA_VERSION,
    CatalogRepository,
    Database,
    KeyRepository,
    SchemaTooNewError,
    TaskRepository,
)
from kiln.storage.database import database_url
from kiln.storage.schema import metadata, schema_versions

# The database of a Kiln from before versioned migrations and before task runs were recorded:
# its `tasks` has no run_id and no finished_at, and it has no webhook_secrets or key_usage.
OLD_KILN_SCHEMA = """
CREATE TABLE api_keys (key_id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE models (
    air TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL, category TEXT NOT NULL,
    type TEXT, architecture TEXT NOT NULL, path TEXT NOT NULL, config_path TEXT,
    tags TEXT NOT NULL, conditioning TEXT, comment TEXT NOT NULL, defaults TEXT NOT NULL,
    created_at REAL NOT NULL);
CREATE TABLE images (
    image_uuid TEXT PRIMARY KEY, owner TEXT NOT NULL, format TEXT NOT NULL,
    width INTEGER NOT NULL, height INTEGER NOT NULL, origin TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE tasks (
    owner TEXT NOT NULL, task_uuid TEXT NOT NULL, task_type TEXT NOT NULL,
    created_at REAL NOT NULL, PRIMARY KEY (owner, task_uuid));
CREATE TABLE task_replies (
    id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, task_uuid TEXT NOT NULL,
    kind TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX task_replies_task ON task_replies (owner, task_uuid);
CREATE INDEX images_created ON images (created_at);
INSERT INTO api_keys VALUES ('kid', 'old key', 1.0);
INSERT INTO models VALUES ('kiln:old@1', 'old', '1', 'checkpoint', 'base', 'sd1x', '/models/old',
                           NULL, '["a"]', NULL, '', '{}', 1.0);
INSERT INTO tasks VALUES ('kid', 'task-1', 'imageInference', 1.0);
INSERT INTO task_replies (owner, task_uuid, kind, body) VALUES ('kid', 'task-1', 'data', '{"x": 1}');
"""


def _columns(db: Database) -> dict[str, set[str]]:
    with db.read() as conn:
        inspector = inspect(conn)
        return {table: {column["name"] for column in inspector.get_columns(table)}
                for table in inspector.get_table_names()}


def _versions(db: Database) -> list[int]:
    with db.read() as conn:
        return list(conn.execute(select(schema_versions.c.version).order_by(schema_versions.c.version)).scalars())


def test_a_new_database_has_every_table_and_column_of_the_schema(db):
    assert _columns(db) == {table.name: set(table.columns.keys()) for table in metadata.sorted_tables}
    assert _versions(db) == list(range(1, SCHEMA_VERSION + 1))


def test_opening_a_migrated_database_again_changes_nothing(db, target):
    KeyRepository(db).add("kid", "a key", 1.0)
    again = Database(target)
    assert _versions(again) == list(range(1, SCHEMA_VERSION + 1))
    assert [key.key_id for key in KeyRepository(again).all()] == ["kid"]
    again.close()


def test_the_data_directory_of_an_older_kiln_is_adopted_with_its_rows(tmp_path):
    path = tmp_path / "kiln.sqlite3"
    with sqlite3.connect(path) as old:
        old.executescript(OLD_KILN_SCHEMA)
    db = Database(path)
    assert _versions(db) == list(range(1, SCHEMA_VERSION + 1))
    assert _columns(db) == {table.name: set(table.columns.keys()) for table in metadata.sorted_tables}
    with db.read() as conn:
        assert "tasks_finished" in {index["name"] for index in inspect(conn).get_indexes("tasks")}
    assert KeyRepository(db).exists("kid")
    assert CatalogRepository(db).get("kiln:old@1")["tags"] == '["a"]'  # type: ignore[index]
    old_task = TaskRepository(db).get("kid", "task-1", front_id="front", now=time.time())
    # an unfinished task of the old Kiln ran on no live front: it will never finish
    assert old_task is not None and old_task.finished_at is None and not old_task.front_alive
    assert old_task.replies == (("data", '{"x": 1}'),)
    db.close()


def test_a_database_of_a_newer_kiln_is_refused(db, target):
    with db.write() as conn:
        conn.execute(schema_versions.insert().values(version=SCHEMA_VERSION + 1, applied_at=1.0))
    with pytest.raises(SchemaTooNewError, match="upgrade Kiln"):
        Database(target)


def test_fronts_that_start_together_migrate_the_database_once(target):
    errors: list[BaseException] = []
    opened: list[Database] = []

    def open_database() -> None:
        try:
            opened.append(Database(target))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=open_database) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(opened) == 4
    assert _versions(opened[0]) == list(range(1, SCHEMA_VERSION + 1))
    for db in opened:
        db.close()


def test_a_new_sqlite_file_declares_the_columns_as_older_kilns_did(tmp_path):
    """`task_replies.id` is INTEGER, SQLite's rowid, as in the files of older Kilns (a BIGINT
    would not be, and would get no automatic values)."""
    Database(tmp_path / "new.sqlite3").close()
    engine = create_engine(database_url(tmp_path / "new.sqlite3"))
    with engine.connect() as conn:
        replies = {column["name"]: str(column["type"]) for column in inspect(conn).get_columns("task_replies")}
    engine.dispose()
    assert replies == {"id": "INTEGER", "owner": "TEXT", "task_uuid": "TEXT", "kind": "TEXT", "body": "TEXT"}
