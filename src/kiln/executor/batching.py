"""Which one-image units may share a pipeline call, and the order in which units are batched.

Pure bookkeeping (no threads, no asyncio, no torch): `InProcessExecutor` holds a `UnitQueue`
under its lock. Guarantees:

- Two units share a batch only if their `batch_key`s are equal.
- Turns rotate over owners (API keys): the owner whose turn it is picks the batch's key (that of
  its oldest unit); the batch is then filled with units of that key, one per owner per round,
  oldest first per owner. An owner that just picked goes behind every owner that is waiting, so
  a waiting owner gets its turn after at most one batch of each owner ahead of it.
- One owner's units of one key are batched in arrival order.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field, fields, replace
from typing import Generic, TypeVar

from kiln.generation import GenerationRequest

PER_IMAGE_FIELDS = frozenset({"positive_prompt", "negative_prompt", "seeds", "init_image", "mask_image"})
"""Fields of a `GenerationRequest` that may differ within one pipeline call; every other field
(a field added later included) is part of the batch key."""


def batch_key(request: GenerationRequest) -> Hashable:
    """What must be equal for two one-seed requests to run in one pipeline call.

    Model, mode, size, steps, scheduler, CFG, clip skip, prompt weighting, strength (image and
    inpaint modes only), the LoRAs with their weights and the ControlNets with their settings,
    in order, the VAE, the embeddings, the refiner and the IP-Adapters with their weights and
    number of guide images. Prompts, seeds and input images (init, mask, ControlNet and
    IP-Adapter guides) may differ.
    """
    parts: list[tuple[str, object]] = []
    for spec in fields(request):
        if spec.name in PER_IMAGE_FIELDS:
            continue
        value = getattr(request, spec.name)
        if spec.name == "strength" and request.mode == "text":
            value = None  # text-to-image ignores it
        elif spec.name == "controlnets":
            value = tuple(replace(controlnet, guide_image=None) for controlnet in value)
        elif spec.name == "ip_adapters":
            value = tuple((adapter.model, len(adapter.guide_images), adapter.weight) for adapter in value)
        parts.append((spec.name, value))
    return tuple(parts)


@dataclass(eq=False)
class Unit:
    """One image to generate: a request of exactly one seed, from `owner`, queued at `arrived_s`
    (any monotonic clock)."""

    request: GenerationRequest
    owner: str = ""
    arrived_s: float = 0.0
    key: Hashable = field(init=False)

    def __post_init__(self) -> None:
        if len(self.request.seeds) != 1:
            raise ValueError(f"a unit has exactly one seed, not {len(self.request.seeds)}")
        self.key = batch_key(self.request)


U = TypeVar("U", bound=Unit)


class UnitQueue(Generic[U]):
    """Pending units by owner, with the turn order of owners (see the module docstring)."""

    def __init__(self) -> None:
        self._pending: dict[str, deque[U]] = {}
        # owner -> (turn rank, arrival order): the lowest picks the next batch's key
        self._rank: dict[str, tuple[float, int]] = {}
        self._turns = 0
        self._arrivals = itertools.count()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, unit: U) -> None:
        if unit.owner not in self._pending:
            self._pending[unit.owner] = deque()
            # behind every waiting owner (ranks <= turns - 1), ahead of the one that just picked
            self._rank[unit.owner] = (self._turns - 0.5, next(self._arrivals))
        self._pending[unit.owner].append(unit)
        self._size += 1

    def remove(self, unit: U) -> bool:
        """Take `unit` out of the queue; False if it is not in it."""
        units = self._pending.get(unit.owner)
        if units is None or not any(queued is unit for queued in units):
            return False
        units.remove(unit)
        self._size -= 1
        self._forget_if_empty(unit.owner)
        return True

    def drain(self) -> list[U]:
        """Every pending unit, the queue left empty."""
        units = [unit for queued in self._pending.values() for unit in queued]
        self._pending.clear()
        self._rank.clear()
        self._size = 0
        return units

    def oldest_arrival(self) -> float | None:
        """When the unit that has waited longest arrived; None when the queue is empty."""
        return min((units[0].arrived_s for units in self._pending.values()), default=None)

    def newest_arrival(self, key: Hashable) -> float | None:
        """When the pending unit of `key` that came last arrived; None when there is none."""
        return max((unit.arrived_s for units in self._pending.values() for unit in units if unit.key == key),
                   default=None)

    def leader(self) -> U | None:
        """The unit whose key the next batch takes: the oldest unit of the owner whose turn it is."""
        if not self._pending:
            return None
        return self._pending[self._owners_in_turn()[0]][0]

    def count(self, key: Hashable) -> int:
        """How many pending units have `key`."""
        return sum(unit.key == key for units in self._pending.values() for unit in units)

    def take(self, limit: int) -> list[U]:
        """Remove and return the next batch: up to `limit` units of the leader's key, taken one
        per owner per round (owners in turn order), oldest first per owner."""
        owners = self._owners_in_turn()
        if not owners or limit < 1:
            return []
        picker = owners[0]
        key = self._pending[picker][0].key
        batch: list[U] = []
        while len(batch) < limit:
            taken = len(batch)
            for owner in owners:
                unit = next((u for u in self._pending[owner] if u.key == key), None)
                if unit is not None:
                    self._pending[owner].remove(unit)
                    batch.append(unit)
                    if len(batch) == limit:
                        break
            if len(batch) == taken:
                break
        self._size -= len(batch)
        self._turns += 1
        self._rank[picker] = (self._turns, self._rank[picker][1])
        for owner in owners:
            self._forget_if_empty(owner)
        return batch

    def _owners_in_turn(self) -> list[str]:
        return sorted(self._pending, key=self._rank.__getitem__)

    def _forget_if_empty(self, owner: str) -> None:
        if not self._pending[owner]:
            del self._pending[owner]
            del self._rank[owner]
