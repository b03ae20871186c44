"""Model residency: every model the engine holds (pipelines, ControlNets, LoRAs, annotators) in
one least-recently-used set under a byte budget, evicted so that the memory really comes back.

An entry's size is the bytes of the tensors it holds (parameters and buffers, each storage
counted once). A LoRA is an entry whose parent is the pipeline it was loaded into: evicting it
deletes the adapter from that pipeline, and evicting the pipeline drops its LoRAs with it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import gc
import json
import logging
import math
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _Entry:
    value: Any
    size: int
    parent: Hashable | None
    on_evict: Callable[[Any], None] | None
    pins: int = 0


class Residency:
    """The models held in memory, least recently used evicted first once `budget` bytes are
    exceeded.

    Guarantees:
    - `get` loads a model at most once however many threads ask for it together; the others
      wait for that load (a failed load is retried by the next caller).
    - Before a load, models are evicted to make room for its expected size; after it, until the
      total fits the budget again. Neither evicts the model just asked for, a pinned one (taken
      through an open `Lease`), or the child of a pinned one. When everything else is pinned the
      budget is exceeded rather than a request failed.
    - An evicted model is no longer referenced here; once no caller holds it either, its memory
      is released: garbage collected, the CUDA cache emptied, and freed heap pages returned to
      the operating system (glibc's `malloc_trim`), so the process's RSS falls.

    Thread-safe.
    """

    def __init__(self, budget: int, device: str = "cpu") -> None:
        if budget < 1:
            raise ValueError(f"budget must be at least 1 byte, got {budget}")
        self._budget = budget
        self._device = device
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._loading: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()
        self._evictions = 0

    @property
    def budget(self) -> int:
        """The byte budget."""
        return self._budget

    @property
    def resident_bytes(self) -> int:
        """Bytes of the models held now."""
        with self._lock:
            return sum(entry.size for entry in self._entries.values())

    @property
    def evictions(self) -> int:
        """How many models were evicted since this residency was made (children included)."""
        return self._evictions

    def keys(self) -> list[Hashable]:
        """The keys held, least recently used first."""
        with self._lock:
            return list(self._entries)

    def children(self, parent: Hashable) -> list[Hashable]:
        """The keys held whose parent is `parent`, least recently used first."""
        with self._lock:
            return [key for key, entry in self._entries.items() if entry.parent == parent]

    def lease(self) -> Lease:
        """A scope in which every model taken stays resident: `with residency.lease() as lease:`."""
        return Lease(self)

    def get(
        self,
        key: Hashable,
        load: Callable[[], T],
        *,
        size: Callable[[T], int] | None = None,
        expected_size: int = 0,
        parent: Hashable | None = None,
        on_evict: Callable[[T], None] | None = None,
    ) -> T:
        """The model held under `key`, made by `load()` on first use (its exceptions propagate).

        `size(value)` gives its bytes (default: `tensor_bytes`); `expected_size` is what to make
        room for before loading. `parent` (a key held now) ties the entry's life to that one's;
        `on_evict(value)` runs when the entry itself is evicted (not when its parent is).
        """
        return self._get(key, load, size, expected_size, parent, on_evict, lease=None)

    def evict(self, key: Hashable) -> bool:
        """Evict `key` (and its children) now unless it is pinned; whether it was evicted."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.pins:
                return False
            self._evict(key, entry)
        release_memory(self._device)
        return True

    def _get(
        self,
        key: Hashable,
        load: Callable[[], T],
        size: Callable[[T], int] | None,
        expected_size: int,
        parent: Hashable | None,
        on_evict: Callable[[T], None] | None,
        lease: Lease | None,
    ) -> T:
        while True:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    self._touch(key, entry)
                    if lease is not None:
                        lease._pin(key, entry)
                    return entry.value
                loading = self._loading.get(key)
                if loading is None:
                    loading = self._loading[key] = threading.Event()
                    break
            loading.wait()  # another thread loads it; take its result, or load it if it failed
        try:
            if expected_size:
                self._settle(expected_size, keep=parent)
            value = load()
            entry = _Entry(value, (size or tensor_bytes)(value), parent, on_evict, pins=1)
            with self._lock:
                if parent is not None and parent not in self._entries:
                    raise RuntimeError(f"parent {parent!r} of {key!r} is not resident")
                self._entries[key] = entry
                self._touch(key, entry)
                if lease is not None:
                    lease._pin(key, entry)
        finally:
            with self._lock:
                del self._loading[key]
            loading.set()
        try:
            self._settle(0)  # the new entry's own pin keeps it while room is made for it
        finally:
            with self._lock:
                entry.pins -= 1
        return value

    def _touch(self, key: Hashable, entry: _Entry) -> None:
        """Mark `key` most recently used, and its parent after it: a pipeline is used whenever
        one of its LoRAs is, and its LoRAs go before it."""
        self._entries.move_to_end(key)
        if entry.parent is not None and entry.parent in self._entries:
            self._entries.move_to_end(entry.parent)

    def _settle(self, incoming: int, keep: Hashable | None = None) -> None:
        """Evict least recently used entries until `incoming` more bytes fit the budget."""
        evicted = False
        with self._lock:
            total = sum(entry.size for entry in self._entries.values())
            for key in list(self._entries):
                if total + incoming <= self._budget:
                    break
                entry = self._entries.get(key)
                if entry is None or key == keep or self._pinned(entry):
                    continue
                total -= self._evict(key, entry)
                evicted = True
            if total > self._budget:  # said once a load is done, not before it
                log.warning(
                    "model memory %.1f MB is over the %.1f MB budget: the rest is in use",
                    total / 1e6, self._budget / 1e6,
                )
        if evicted:
            release_memory(self._device)

    def _pinned(self, entry: _Entry) -> bool:
        parent = self._entries.get(entry.parent) if entry.parent is not None else None
        return entry.pins > 0 or (parent is not None and parent.pins > 0)

    def _evict(self, key: Hashable, entry: _Entry) -> int:
        """Drop `key` and its children (lock held); the bytes freed."""
        freed = 0
        for child in [k for k, e in self._entries.items() if e.parent == key]:
            child_entry = self._entries.pop(child)
            child_entry.value = None
            freed += child_entry.size
            self._evictions += 1
        del self._entries[key]
        self._evictions += 1
        if entry.on_evict is not None:
            try:
                entry.on_evict(entry.value)
            except Exception:  # the entry is gone either way; say why its cleanup failed
                log.exception("cleaning up evicted %s failed", key)
        entry.value = None  # callers' locals may still hold the entry while memory is released
        log.info("evicted %s (%.1f MB)", key, entry.size / 1e6)
        return freed + entry.size


class Lease:
    """Models taken through a lease are pinned (never evicted) until it is closed.

    Used around a batch, so that nothing it runs with is evicted under it.
    """

    def __init__(self, residency: Residency) -> None:
        self._residency = residency
        self._pinned: list[_Entry] = []

    def get(
        self,
        key: Hashable,
        load: Callable[[], T],
        *,
        size: Callable[[T], int] | None = None,
        expected_size: int = 0,
        parent: Hashable | None = None,
        on_evict: Callable[[T], None] | None = None,
    ) -> T:
        """As `Residency.get`, and the model stays pinned until the lease is closed."""
        return self._residency._get(key, load, size, expected_size, parent, on_evict, lease=self)

    def _pin(self, key: Hashable, entry: _Entry) -> None:  # with the residency's lock held
        entry.pins += 1
        self._pinned.append(entry)

    def close(self) -> None:
        """Unpin everything taken; then evict what no longer fits the budget."""
        with self._residency._lock:
            for entry in self._pinned:
                entry.pins -= 1
            self._pinned.clear()
        self._residency._settle(0)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def tensor_bytes(value: Any) -> int:
    """Bytes of the tensors `value` holds: the parameters and buffers of its modules, found in
    torch modules, pipelines (`components`), dataclasses, mappings and sequences; each storage
    counted once."""
    storages: dict[int, int] = {}

    def add(tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()

    def visit(obj: Any, depth: int) -> None:
        if depth > 4 or obj is None:
            return
        if isinstance(obj, torch.Tensor):
            add(obj)
        elif isinstance(obj, torch.nn.Module):
            for tensor in (*obj.parameters(), *obj.buffers()):
                add(tensor)
        elif isinstance(getattr(obj, "components", None), dict):  # a diffusers pipeline
            for component in obj.components.values():
                visit(component, depth + 1)
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            for field in dataclasses.fields(obj):
                visit(getattr(obj, field.name), depth + 1)
        elif isinstance(obj, dict):
            for item in obj.values():
                visit(item, depth + 1)
        elif isinstance(obj, list | tuple):
            for item in obj:
                visit(item, depth + 1)

    visit(value, 0)
    return sum(storages.values())


def file_bytes(path: str | Path, element_bytes: int | None = None) -> int:
    """Bytes the weights at `path` (a file, or the weight files of a folder) are expected to
    take once loaded: the size of the files, or for `.safetensors` files with `element_bytes`
    given, their floating-point tensors counted at that many bytes per element."""
    path = Path(path)
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.suffix in _WEIGHT_SUFFIXES and p.is_file()]
    else:
        files = [path] if path.is_file() else []
    return sum(_weights_bytes(file, element_bytes) for file in files)


_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".pt2", ".ckpt"}
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


def _weights_bytes(file: Path, element_bytes: int | None) -> int:
    if element_bytes is None or file.suffix != ".safetensors":
        return file.stat().st_size
    try:  # the header: an 8-byte little-endian length, then JSON naming each tensor's dtype
        with file.open("rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    except (OSError, ValueError):
        return file.stat().st_size
    total = 0
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        start, end = tensor["data_offsets"]
        if tensor["dtype"] in _FLOAT_DTYPES:
            total += math.prod(tensor["shape"]) * element_bytes
        else:
            total += end - start
    return total


def release_memory(device: str) -> None:
    """Return the memory of unreferenced models: collect garbage, empty the CUDA cache, and
    hand freed heap pages back to the operating system."""
    gc.collect()
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    if _malloc_trim is not None:
        _malloc_trim(0)


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`: without it, freed tensor memory often stays in the heap."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # musl and other C libraries have none
        return None
    return trim


_malloc_trim = _find_malloc_trim()
