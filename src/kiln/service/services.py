"""The long-lived services a running Kiln shares: database, its front, keys, catalog, images,
executor, retention."""

from __future__ import annotations

from dataclasses import dataclass

from kiln.executor import Executor, open_executor
from kiln.keys import KeyStore
from kiln.media import ImageStore, open_blobs
from kiln.media.outbound import OutboundPolicy
from kiln.models import Catalog
from kiln.safety import NSFWChecker
from kiln.service.front import Front
from kiln.service.retention import Retention
from kiln.service.task_registry import TaskRegistry
from kiln.settings import Settings
from kiln.storage import Database


@dataclass
class Services:
    settings: Settings
    db: Database
    front: Front
    keys: KeyStore
    catalog: Catalog
    images: ImageStore
    tasks: TaskRegistry
    executor: Executor
    nsfw: NSFWChecker
    retention: Retention

    @classmethod
    def open(cls, settings: Settings, executor: Executor | None = None) -> Services:
        """Open the data directory and the database of `settings` (created if missing),
        register as a front of the database and start the retention."""
        db = Database.open(settings)
        front = Front(db)
        front.start()
        images = ImageStore(db, open_blobs(settings))
        tasks = TaskRegistry(db, images, settings.task_ttl_s, front.front_id)
        retention = Retention(images, tasks, settings.media_ttl_s)
        retention.start()
        return cls(
            settings=settings,
            db=db,
            front=front,
            keys=KeyStore(db, settings.api_keys),
            catalog=Catalog(db),
            images=images,
            tasks=tasks,
            executor=executor or open_executor(settings),
            nsfw=NSFWChecker(settings.nsfw_classes, settings.nsfw_threshold),
            retention=retention,
        )

    @property
    def outbound(self) -> OutboundPolicy:
        """The rules for every request Kiln makes to a client-given URL."""
        return OutboundPolicy(allow_private=self.settings.allow_private_urls,
                              proxy=self.settings.outbound_proxy)

    @property
    def delivery_policy(self) -> OutboundPolicy:
        """The rules for `uploadEndpoint` and `webhookURL` requests (one attempt's time limit)."""
        return OutboundPolicy(
            allow_private=self.settings.allow_private_urls, timeout_s=self.settings.delivery_timeout_s,
            proxy=self.settings.outbound_proxy,
        )

    def close(self) -> None:
        self.retention.stop()
        self.front.close()
        self.executor.close()
        self.db.close()
