"""Each storage test runs on both backends, on a new, empty database of its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.storage import Database


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a new database is: an SQLite file, or the URL of a new PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "kiln.sqlite3"
    return str(request.getfixturevalue("postgres").create_database())


@pytest.fixture
def db(target: Path | str) -> Iterator[Database]:
    db = Database(target)
    yield db
    db.close()


@pytest.fixture
def second_db(target: Path | str, db: Database) -> Iterator[Database]:
    """Another handle on the database of `db`, as a second front (process) holds it."""
    other = Database(target)
    yield other
    other.close()
