"""Task records and their replies, per key (`kiln.service.task_registry` gives them meaning)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, delete, or_, select, tuple_, update

from kiln.storage.database import Database
from kiln.storage.fronts import on_live_front
from kiln.storage.schema import task_replies, tasks


@dataclass(frozen=True)
class StoredTask:
    """A task's row and its replies, in the order they were added.

    `front_alive`: the front that runs the task was alive when read (or is the reader).
    """

    task_type: str
    finished_at: float | None
    front_alive: bool
    replies: tuple[tuple[str, str], ...]  # (kind: data | error, JSON body)


class TaskRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def claim(self, owner: str, task_uuid: str, task_type: str, *, front_id: str, now: float,
              expired_before: float) -> bool:
        """Record the task as processing on `front_id`; False when `owner` already has a
        record of `task_uuid`. A record finished before `expired_before` is deleted first."""
        key = and_(tasks.c.owner == owner, tasks.c.task_uuid == task_uuid)
        with self._db.write() as conn:
            if conn.execute(select(tasks.c.owner).where(
                    key, tasks.c.finished_at < expired_before)).first() is not None:
                conn.execute(delete(task_replies).where(
                    task_replies.c.owner == owner, task_replies.c.task_uuid == task_uuid))
                conn.execute(delete(tasks).where(key))
            inserted = conn.execute(self._db.insert(tasks).values(
                owner=owner, task_uuid=task_uuid, task_type=task_type, created_at=now,
                run_id=front_id,
            ).on_conflict_do_nothing(index_elements=["owner", "task_uuid"]).returning(tasks.c.owner))
            return inserted.first() is not None

    def add_reply(self, owner: str, task_uuid: str, kind: str, body: str) -> None:
        with self._db.write() as conn:
            conn.execute(task_replies.insert().values(
                owner=owner, task_uuid=task_uuid, kind=kind, body=body))

    def finish(self, owner: str, task_uuid: str, now: float) -> None:
        with self._db.write() as conn:
            conn.execute(update(tasks).where(
                tasks.c.owner == owner, tasks.c.task_uuid == task_uuid).values(finished_at=now))

    def get(self, owner: str, task_uuid: str, *, front_id: str, now: float) -> StoredTask | None:
        """The record of `owner`'s task, or None; whether its front is alive as seen at `now`
        by the front `front_id`."""
        query = select(
            tasks.c.task_type, tasks.c.finished_at,
            on_live_front(tasks.c.run_id, now, own=front_id).label("front_alive"),
        ).where(tasks.c.owner == owner, tasks.c.task_uuid == task_uuid)
        replies = (select(task_replies.c.kind, task_replies.c.body)
                   .where(task_replies.c.owner == owner, task_replies.c.task_uuid == task_uuid)
                   .order_by(task_replies.c.id))
        with self._db.read() as conn:
            row = conn.execute(query).first()
            if row is None:
                return None
            return StoredTask(row.task_type, row.finished_at, bool(row.front_alive),
                              tuple((reply.kind, reply.body) for reply in conn.execute(replies)))

    def purge(self, expired_before: float, *, front_id: str, now: float) -> int:
        """Delete the records finished before `expired_before`, and those started before it
        on a front that is no longer alive (they will never finish). Returns how many."""
        expired = select(tasks.c.owner, tasks.c.task_uuid).where(or_(
            tasks.c.finished_at < expired_before,
            and_(tasks.c.finished_at.is_(None), tasks.c.created_at < expired_before,
                 or_(tasks.c.run_id.is_(None), ~on_live_front(tasks.c.run_id, now, own=front_id))),
        ))
        with self._db.write() as conn:
            conn.execute(delete(task_replies).where(
                tuple_(task_replies.c.owner, task_replies.c.task_uuid).in_(expired)))
            return conn.execute(delete(tasks).where(
                tuple_(tasks.c.owner, tasks.c.task_uuid).in_(expired))).rowcount
