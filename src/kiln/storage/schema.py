"""The tables of Kiln's database, as the latest migration leaves them (`kiln.storage.migrations`).

Times are epoch seconds (float) from the clock of the process that writes them. The same
definitions serve SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
)

metadata = MetaData()

# version 1: the tables of every Kiln before versioned migrations

api_keys = Table(
    "api_keys", metadata,
    Column("key_id", Text, primary_key=True),  # sha256 of the key; the key itself is never stored
    Column("name", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

models = Table(
    "models", metadata,
    Column("air", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("category", Text, nullable=False),
    Column("type", Text),
    Column("architecture", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("config_path", Text),
    Column("tags", Text, nullable=False),  # JSON list
    Column("conditioning", Text),
    Column("comment", Text, nullable=False),
    Column("defaults", Text, nullable=False),  # JSON object: width, height, steps, cfg, scheduler
    Column("created_at", Float, nullable=False),
)

images = Table(
    "images", metadata,
    Column("image_uuid", Text, primary_key=True),
    Column("owner", Text, nullable=False),
    Column("format", Text, nullable=False),  # file extension: png, jpg, webp
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("origin", Text, nullable=False),  # generated | uploaded | guide
    Column("created_at", Float, nullable=False),
    Index("images_created", "created_at"),
)

tasks = Table(
    "tasks", metadata,
    Column("owner", Text, primary_key=True),
    Column("task_uuid", Text, primary_key=True),
    Column("task_type", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("run_id", Text),  # the front (`fronts.front_id`) that runs it
    Column("finished_at", Float),  # NULL while processing
    Index("tasks_finished", "finished_at"),
)

task_replies = Table(  # every result item and error of a task, in order
    "task_replies", metadata,
    # INTEGER exactly on SQLite: only that type makes the column the rowid
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("owner", Text, nullable=False),
    Column("task_uuid", Text, nullable=False),
    Column("kind", Text, nullable=False),  # data | error
    Column("body", Text, nullable=False),  # the JSON item as sent
    Index("task_replies_task", "owner", "task_uuid"),
    sqlite_autoincrement=True,
)

webhook_secrets = Table(  # signs the key's webhooks and uploads
    "webhook_secrets", metadata,
    Column("key_id", Text, primary_key=True),
    Column("secret", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

key_usage = Table(
    "key_usage", metadata,
    Column("key_id", Text, primary_key=True),
    Column("images", Integer, nullable=False),
    Column("cost", Float, nullable=False),
)

VERSION_1 = (api_keys, models, images, tasks, task_replies, webhook_secrets, key_usage)

# version 2: several fronts on one database

fronts = Table(  # every running server process; a row whose heartbeat is old is a dead front
    "fronts", metadata,
    Column("front_id", Text, primary_key=True),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
)

admission_tickets = Table(  # one row per admitted task in flight (kiln.service.admission)
    "admission_tickets", metadata,
    Column("ticket_id", Text, primary_key=True),
    Column("front_id", Text, nullable=False),
    Column("key_id", Text, nullable=False),
    Column("results", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("admission_tickets_front", "front_id"),
)

VERSION_2 = (fronts, admission_tickets)

schema_versions = Table(  # one row per migration applied (kiln.storage.migrations)
    "schema_versions", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", Float, nullable=False),
)
