"""The database handle: URLs, transactions, SQLite's settings, and every wait bounded: an
unreachable or stopped PostgreSQL is a typed error at once, and the same handle works again
when the server is back."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from kiln.errors import ServiceUnavailableError
from kiln.settings import Settings
from kiln.storage import Database, KeyRepository, database_url
from kiln.storage.schema import api_keys
from tests.postgres import postgres_server, require_postgres


def test_urls_name_sqlite_files_and_postgresql_through_psycopg(tmp_path):
    assert database_url(tmp_path / "k.sqlite3").render_as_string() == f"sqlite:///{tmp_path}/k.sqlite3"
    for url in ("postgresql://kiln:secret@db:5432/kiln", "postgres://kiln:secret@db:5432/kiln"):
        assert database_url(url).drivername == "postgresql+psycopg"
    with pytest.raises(ValueError, match="KILN_DATABASE_URL must be postgresql://"):
        database_url("mysql://kiln@db/kiln")
    with pytest.raises(ValueError, match="KILN_DATABASE_URL"):
        database_url("sqlite://")  # in memory: every connection would see another database
    with pytest.raises(ValueError, match="not a URL"):
        database_url("kiln.sqlite3")


def test_the_settings_choose_the_backend(tmp_path):
    db = Database.open(Settings(data_dir=tmp_path / "data"))
    assert db.dialect == "sqlite" and (tmp_path / "data" / "kiln.sqlite3").exists()
    db.close()


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    db = Database(tmp_path / "kiln.sqlite3")
    with db.read() as conn:
        pragmas = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                   for name in ("journal_mode", "busy_timeout", "synchronous")}
    db.close()
    assert pragmas == {"journal_mode": "wal", "busy_timeout": 5000, "synchronous": 1}  # NORMAL


def test_a_write_commits_all_of_its_statements_or_none(db):
    with pytest.raises(RuntimeError), db.write() as conn:
        conn.execute(api_keys.insert().values(key_id="first", name="x", created_at=1.0))
        conn.execute(api_keys.insert().values(key_id="second", name="x", created_at=1.0))
        raise RuntimeError
    with db.write() as conn:
        conn.execute(api_keys.insert().values(key_id="third", name="x", created_at=1.0))
    assert [key.key_id for key in KeyRepository(db).all()] == ["third"]


def test_sqlite_writers_of_one_process_take_turns_and_wait_a_bounded_time(tmp_path):
    db = Database(tmp_path / "kiln.sqlite3", statement_timeout_s=0.3)

    def add(n: int) -> None:
        for i in range(10):  # read, then write what was read: serialised or keys go missing
            with db.write() as conn:
                count = conn.execute(select(func.count()).select_from(api_keys)).scalar()
                conn.execute(api_keys.insert().values(key_id=f"k{count}", name=f"{n}-{i}", created_at=1.0))

    writers = [threading.Thread(target=add, args=(n,)) for n in range(8)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert len(KeyRepository(db).all()) == 80

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.write():
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError, match="busy"), db.write():
        pass
    waited = time.monotonic() - started
    release.set()
    holder.join()
    assert 0.25 <= waited < 3
    db.close()


def test_a_closed_handle_is_a_typed_error(db):
    db.close()
    with pytest.raises(ServiceUnavailableError):
        db.ping()


def test_a_postgresql_that_refuses_connections_is_a_typed_error_at_once():
    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError) as raised:
        Database("postgresql://kiln@127.0.0.1:1/kiln", connect_timeout_s=2)
    assert time.monotonic() - started < 5
    assert (raised.value.code, raised.value.status) == ("serviceUnavailable", 503)


def test_a_statement_that_runs_too_long_is_cancelled(postgres):
    db = Database(postgres.create_database(), statement_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError), db.read() as conn:
        conn.execute(select(func.pg_sleep(30)))
    assert time.monotonic() - started < 5
    db.ping()  # the handle still works
    db.close()


def test_a_stopped_postgresql_fails_fast_and_the_handle_recovers_when_it_returns(tmp_path: Path):
    require_postgres()
    with postgres_server() as server:
        db = Database(server.create_database())
        keys = KeyRepository(db)
        keys.add("before", "a key", 1.0)
        server.stop()
        started = time.monotonic()
        for _ in range(3):  # pooled connections and new ones alike
            with pytest.raises(ServiceUnavailableError):
                keys.exists("before")
        assert time.monotonic() - started < 5
        server.start()
        assert keys.exists("before")
        keys.add("after", "a key", 2.0)
        assert [key.key_id for key in keys.all()] == ["before", "after"]
        db.close()
