"""Model residency: one LRU under a byte budget for pipelines, ControlNets, LoRAs and
annotators; loads once; evicts what no batch uses, and eviction gives the memory back."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionControlNetPipeline, UNet2DConditionModel
from PIL import Image

from kiln.engine import Engine
from kiln.engine.demo_models import build_tiny_controlnet, build_tiny_lora, tiny_unet_kwargs
from kiln.engine.residency import Residency, file_bytes, tensor_bytes
from kiln.errors import ModelLoadError
from kiln.generation import ControlNetInput, LoraInput, ModelSpec
from tests.engine.annotators.test_depth import tiny_depth_model

from .helpers import TinyModels, make_request


def linear(size: int) -> torch.nn.Linear:
    """A module of `size` floats of weights plus `size // 64` of bias (no other tensors)."""
    return torch.nn.Linear(64, size // 64)


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- the residency on its own --------------------------------------------------------------


def test_size_is_the_bytes_of_parameters_and_buffers_counted_once() -> None:
    module = torch.nn.BatchNorm1d(10)  # 2 parameters and 3 buffers
    assert tensor_bytes(module) == 4 * 10 * 4 + 8
    shared = torch.nn.Linear(8, 8)
    assert tensor_bytes([shared, {"again": shared}]) == tensor_bytes(shared) == (64 + 8) * 4


def test_least_recently_used_goes_first_when_over_budget() -> None:
    residency = Residency(budget=3 * 4160 * 4)
    for key in "abc":
        residency.get(key, lambda: linear(4096))
    residency.get("a", lambda: pytest.fail("a is resident"))  # now most recently used
    residency.get("d", lambda: linear(4096))
    assert residency.keys() == ["c", "a", "d"]
    assert residency.evictions == 1
    assert residency.resident_bytes == 3 * 4160 * 4


def test_room_is_made_before_loading_what_is_expected() -> None:
    residency = Residency(budget=100_000)
    residency.get("old", lambda: linear(4096))
    seen = []
    residency.get("new", lambda: seen.append(residency.keys()) or linear(64), expected_size=90_000)
    assert seen == [[]] and residency.keys() == ["new"]


def test_a_lease_pins_what_it_took_until_closed() -> None:
    residency = Residency(budget=5000 * 4)
    with residency.lease() as lease:
        lease.get("a", lambda: linear(4096))
        residency.get("b", lambda: linear(4096))  # over budget, but "a" is in use
        assert set(residency.keys()) == {"a", "b"}
        assert residency.evict("a") is False
    assert residency.keys() == ["b"]  # "a" was least recently used once unpinned


def test_children_go_with_their_parent_and_their_cleanup_runs_alone() -> None:
    residency = Residency(budget=10**9)
    cleaned: list[str] = []
    residency.get("pipe", lambda: linear(4096))
    for name in ("x", "y"):
        residency.get(("lora", name), lambda name=name: name, size=lambda _: 100, parent="pipe",
                      on_evict=cleaned.append)
    assert residency.children("pipe") == [("lora", "x"), ("lora", "y")]
    assert residency.evict(("lora", "x")) and cleaned == ["x"]
    assert residency.evict("pipe")
    assert residency.keys() == [] and cleaned == ["x"]  # the pipeline took "y" with it
    assert residency.evictions == 3


def test_children_of_a_pinned_parent_stay() -> None:
    residency = Residency(budget=5000 * 4)
    with residency.lease() as lease:
        lease.get("pipe", lambda: linear(4096))
        residency.get("adapter", lambda: linear(64), parent="pipe")
        residency.get("other", lambda: linear(64))
        assert "adapter" in residency.keys()


def test_one_load_when_several_threads_ask_together() -> None:
    residency = Residency(budget=10**9)
    loads = []
    start = threading.Barrier(4)

    def load() -> torch.nn.Module:
        loads.append(1)
        time.sleep(0.2)
        return linear(4096)

    got: list[object] = []

    def ask() -> None:
        start.wait()
        got.append(residency.get("model", load))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1 and len(got) == 4 and all(model is got[0] for model in got)


def test_a_failed_load_is_not_kept_and_the_next_caller_tries_again() -> None:
    residency = Residency(budget=10**9)
    with pytest.raises(ModelLoadError):
        residency.get("model", lambda: (_ for _ in ()).throw(ModelLoadError("broken")))
    assert residency.keys() == [] and residency.get("model", lambda: 42, size=lambda _: 0) == 42


def test_eviction_gives_the_memory_back_to_the_system() -> None:
    residency = Residency(budget=64 * 2**20)
    residency.get("small", lambda: linear(1024))
    before = rss()
    residency.get("big", lambda: linear(12 * 2**20))  # 48 MB of weights
    loaded = rss()
    assert loaded - before > 40e6
    residency.evict("big")
    assert loaded - rss() > 40e6


def test_the_expected_size_of_a_model_is_its_size_once_loaded(tiny: TinyModels) -> None:
    engine = Engine(device="cpu")
    engine.load(tiny.sd)
    assert file_bytes(tiny.sd.path, 4) == pytest.approx(engine.resident_bytes, rel=0.01)
    assert file_bytes(tiny.sd.path, 2) == pytest.approx(engine.resident_bytes / 2, rel=0.01)


# -- the engine's residency ----------------------------------------------------------------


@pytest.fixture(scope="module")
def wide_sd(tiny: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> ModelSpec:
    """The tiny SD model with a UNet of ~50 MB once loaded: stored in fp16, so loading makes
    fp32 copies in the process's memory (an fp32 file would be mapped, paged in as read)."""
    folder = tmp_path_factory.mktemp("wide") / "sd"
    shutil.copytree(tiny.sd.path, folder)
    shutil.rmtree(folder / "unet")
    torch.manual_seed(0)
    kwargs = {**tiny_unet_kwargs(cross_attention_dim=32), "block_out_channels": (96, 192, 192),
              "norm_num_groups": 32}
    UNet2DConditionModel(**kwargs).half().save_pretrained(folder / "unet")
    return ModelSpec("test:wide@1", "sd1x", str(folder))


def test_evicting_a_pipeline_lowers_the_process_memory(tiny: TinyModels, wide_sd: ModelSpec) -> None:
    engine = Engine(device="cpu", memory_budget=10_000_000)
    engine.load(tiny.sd)
    engine.load(wide_sd)  # over the budget alone: kept, as the model asked for
    size = engine.resident_bytes
    assert engine.loaded_models == (wide_sd.air,) and size > 40e6 and engine.evictions == 1
    loaded = rss()
    engine.load(tiny.sd)
    assert engine.loaded_models == (tiny.sd.air,) and engine.evictions == 2
    assert engine.resident_bytes < 1e6
    assert loaded - rss() > 0.6 * size


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelSpec, ModelSpec]:
    root = tmp_path_factory.mktemp("residency-adapters")
    return (ModelSpec("test:cn@1", "sd1x", str(build_tiny_controlnet(root / "cn"))),
            ModelSpec("test:lora@1", "sd1x", str(build_tiny_lora(root / "lora"))))


def test_pipelines_controlnets_loras_and_annotators_share_one_budget(
    tiny: TinyModels, adapters: tuple[ModelSpec, ModelSpec], tmp_path: Path
) -> None:
    controlnet, lora = adapters
    engine = Engine(device="cpu")
    request = make_request(tiny.sd, controlnets=(ControlNetInput(controlnet, Image.new("RGB", (64, 64))),),
                           loras=(LoraInput(lora, 1.0),))
    engine.generate(request)
    pipeline_only = Engine(device="cpu")
    pipeline_only.load(tiny.sd)
    assert engine.resident_bytes > pipeline_only.resident_bytes + 100_000  # + ControlNet + LoRA
    depth = tiny_depth_model(tmp_path / "depth")
    with_models = engine.resident_bytes
    guide = engine.annotate("depth", depth, Image.new("RGB", (80, 48)), None)
    assert guide.size == (80, 48) and engine.resident_bytes > with_models


def test_loras_go_before_their_pipeline_and_come_back_exact(
    tiny: TinyModels, adapters: tuple[ModelSpec, ModelSpec]
) -> None:
    _, lora = adapters
    bare = Engine(device="cpu")
    bare.load(tiny.sd)
    engine = Engine(device="cpu", memory_budget=bare.resident_bytes + 10_000)  # no room for the LoRA
    with_lora = make_request(tiny.sd, loras=(LoraInput(lora, 1.0),))
    first = np.asarray(engine.generate(with_lora)[0])
    assert engine.evictions == 1 and engine.loaded_models == (tiny.sd.air,)
    assert engine.pipeline(tiny.sd).get_list_adapters() == {}  # deleted from the pipeline
    assert np.array_equal(np.asarray(engine.generate(make_request(tiny.sd))[0]),
                          np.asarray(bare.generate(make_request(tiny.sd))[0]))
    assert np.array_equal(np.asarray(engine.generate(with_lora)[0]), first)


def test_nothing_the_running_batch_uses_is_evicted(
    tiny: TinyModels, adapters: tuple[ModelSpec, ModelSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    controlnet, _ = adapters
    budget = 700_000  # the pipeline (685 kB) or the ControlNet (178 kB), not both
    engine = Engine(device="cpu", memory_budget=budget)
    request = make_request(tiny.sd, controlnets=(ControlNetInput(controlnet, Image.new("RGB", (64, 64))),))
    during: list[tuple[int, int]] = []
    run = StableDiffusionControlNetPipeline.__call__

    def spy(self: object, *args: object, **kwargs: object) -> object:
        during.append((engine.resident_bytes, engine.evictions))
        return run(self, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionControlNetPipeline, "__call__", spy)
    [image] = engine.generate_batch([request])
    assert isinstance(image, Image.Image)
    assert during[0][0] > budget and during[0][1] == 0  # both held while running...
    assert engine.resident_bytes <= budget and engine.evictions == 1  # ...the budget after
