"""The long-lived services a running Kiln shares: database, keys, catalog, images, executor,
retention."""

from __future__ import annotations

from dataclasses import dataclass

from kiln.executor import InProcessExecutor, default_engine_factory
from kiln.keys import KeyStore
from kiln.media import ImageStore
from kiln.media.outbound import OutboundPolicy
from kiln.models import Catalog
from kiln.safety import NSFWChecker
from kiln.service.retention import Retention
from kiln.service.task_registry import TaskRegistry
from kiln.settings import Settings
from kiln.storage import Database


@dataclass
class Services:
    settings: Settings
    db: Database
    keys: KeyStore
    catalog: Catalog
    images: ImageStore
    tasks: TaskRegistry
    executor: InProcessExecutor
    nsfw: NSFWChecker
    retention: Retention

    @classmethod
    def open(cls, settings: Settings, executor: InProcessExecutor | None = None) -> Services:
        """Open the data directory of `settings` (created if missing) and start its retention."""
        db = Database(settings.database_path)
        images = ImageStore(db, settings.media_dir)
        tasks = TaskRegistry(db, images, settings.task_ttl_s)
        retention = Retention(images, tasks, settings.media_ttl_s)
        retention.start()
        return cls(
            settings=settings,
            db=db,
            keys=KeyStore(db, settings.api_keys),
            catalog=Catalog(db),
            images=images,
            tasks=tasks,
            executor=executor or InProcessExecutor(
                default_engine_factory(settings), max_batch=settings.max_batch,
                batch_window_s=settings.batch_window_ms / 1000),
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
        self.executor.close()
        self.db.close()
