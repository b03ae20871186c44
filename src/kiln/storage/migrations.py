"""Versioned migrations: each database records the steps applied to it in `schema_versions`, and
opening it applies the missing ones, in order, in one transaction.

Version 1 is the schema of every Kiln before this runner. A data directory made by such a Kiln
has those tables but no `schema_versions` (and maybe a `tasks` table without `run_id` and
`finished_at`): step 1 adopts it, creating what is missing and keeping every row.

A step creates tables from `kiln.storage.schema` only while they are as it left them; a later
step that changes a table must spell out, in the earlier steps, the table as it was then
(tests/storage/test_migrations.py compares a migrated database with the schema).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import Connection, func, inspect, select

from kiln.storage import schema

log = logging.getLogger(__name__)

_MIGRATION_LOCK = 0x6B696C6E_0001  # PostgreSQL advisory lock: one front migrates at a time


def _version_1(conn: Connection) -> None:
    """The tables of every Kiln before this runner: created where missing; the `tasks` of an
    older one gets its two later columns."""
    if inspect(conn).has_table("tasks"):
        columns = {column["name"] for column in inspect(conn).get_columns("tasks")}
        for name in ("run_id", "finished_at"):
            if name not in columns:
                kind = schema.tasks.c[name].type.compile(conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE tasks ADD COLUMN {name} {kind}")
        for index in schema.tasks.indexes:
            index.create(conn, checkfirst=True)
    schema.metadata.create_all(conn, tables=schema.VERSION_1, checkfirst=True)


def _version_2(conn: Connection) -> None:
    """Fronts and their admission tickets: several server processes share one database."""
    schema.metadata.create_all(conn, tables=schema.VERSION_2, checkfirst=False)


STEPS: tuple[Callable[[Connection], None], ...] = (_version_1, _version_2)
"""Step n (from 1) brings a database from version n - 1 to version n."""
LATEST = len(STEPS)


class SchemaTooNewError(RuntimeError):
    """The database was migrated by a newer Kiln than this one."""


def current_version(conn: Connection) -> int:
    """The version of the database behind `conn`; 0 for an empty or unversioned one."""
    if not inspect(conn).has_table(schema.schema_versions.name):
        return 0
    return int(conn.execute(select(func.max(schema.schema_versions.c.version))).scalar() or 0)


def migrate(conn: Connection, clock: Callable[[], float] = time.time) -> int:
    """Apply the missing steps inside the caller's transaction; return the version reached.

    On PostgreSQL an advisory lock makes fronts that start together migrate one after the
    other (the later ones find nothing left to do); SQLite's write lock does the same.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
    version = current_version(conn)
    if version > LATEST:
        raise SchemaTooNewError(
            f"the database is at schema version {version}, newer than this Kiln's ({LATEST}): "
            "upgrade Kiln, or point it at another database")
    schema.schema_versions.create(conn, checkfirst=True)
    for number in range(version + 1, LATEST + 1):
        log.info("migrating the database to schema version %d", number)
        STEPS[number - 1](conn)
        conn.execute(schema.schema_versions.insert().values(version=number, applied_at=clock()))
    return LATEST
