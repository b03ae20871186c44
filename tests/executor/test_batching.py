"""Which units may share a pipeline call (`batch_key`), and the order `UnitQueue` batches them in:
oldest first per owner, turns rotating over owners, never more than the limit."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest
from PIL import Image

from kiln.executor import batch_key
from kiln.executor.batching import PER_IMAGE_FIELDS, Unit, UnitQueue
from kiln.generation import (
    ControlNetInput,
    EmbeddingInput,
    GenerationRequest,
    LoraInput,
    ModelSpec,
    RefinerInput,
)

MODEL = ModelSpec("kiln:tiny-sd@1", "sd1x", "/models/tiny-sd")
LORA = ModelSpec("kiln:tiny-lora@1", "sd1x", "/models/tiny-lora.safetensors")
CONTROLNET = ModelSpec("kiln:tiny-controlnet@1", "sd1x", "/models/tiny-controlnet")
VAE = ModelSpec("kiln:tiny-vae@1", "sd1x", "/models/tiny-vae")
EMBEDDING = EmbeddingInput(ModelSpec("kiln:tiny-emb@1", "sd1x", "/models/emb.pt"), "tinyemb")
REFINER = RefinerInput(ModelSpec("kiln:tiny-refiner@1", "sdxl", "/models/refiner"), 0.8)


def request(**changes: object) -> GenerationRequest:
    base = GenerationRequest(
        model=MODEL, positive_prompt="a red circle", negative_prompt=None, width=128, height=128,
        steps=4, cfg_scale=7.0, clip_skip=0, scheduler=None, seeds=(1,),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def guide(colour: tuple[int, int, int]) -> ControlNetInput:
    return ControlNetInput(CONTROLNET, Image.new("RGB", (128, 128), colour), weight=0.8)


# --- batch_key ----------------------------------------------------------------------------------

def test_prompts_seeds_and_input_images_may_differ_within_a_batch():
    base = request(mode="image", init_image=Image.new("RGB", (128, 128)), controlnets=(guide((0, 0, 0)),))
    other = replace(
        base, positive_prompt="a blue square", negative_prompt="blurry", seeds=(99,),
        init_image=Image.new("RGB", (128, 128), (255, 255, 255)),
        mask_image=Image.new("L", (128, 128), 255), controlnets=(guide((9, 9, 9)),),
    )
    assert batch_key(base) == batch_key(other)
    assert hash(batch_key(base)) == hash(batch_key(other))


@pytest.mark.parametrize("changes", [
    {"model": replace(MODEL, air="kiln:other@1")},
    {"model": replace(MODEL, path="/models/elsewhere")},
    {"mode": "inpaint"},
    {"width": 256},
    {"height": 64},
    {"steps": 5},
    {"scheduler": "Euler"},
    {"cfg_scale": 5.0},
    {"clip_skip": 1},
    {"prompt_weighting": "compel"},
    {"loras": (LoraInput(LORA, 0.5),)},
    {"controlnets": (guide((0, 0, 0)),)},
    {"vae": VAE},
    {"embeddings": (EMBEDDING,)},
    {"refiner": REFINER},
])
def test_what_changes_the_pipeline_call_changes_the_key(changes):
    assert batch_key(request(**changes)) != batch_key(request())


def test_lora_weights_order_and_controlnet_settings_are_part_of_the_key():
    other_lora = replace(LORA, air="kiln:tiny-lora-2@1")
    pair = (LoraInput(LORA, 0.5), LoraInput(other_lora, 1.0))
    assert batch_key(request(loras=pair)) != batch_key(request(loras=(LoraInput(LORA, 0.6), pair[1])))
    assert batch_key(request(loras=pair)) != batch_key(request(loras=pair[::-1]))
    control = guide((0, 0, 0))
    for setting in ({"weight": 0.5}, {"start": 0.2}, {"end": 0.7}, {"control_mode": "prompt"}):
        assert batch_key(request(controlnets=(control,))) != batch_key(
            request(controlnets=(replace(control, **setting),)))


def test_strength_counts_only_where_an_init_image_is_noised():
    assert batch_key(request(strength=0.3)) == batch_key(request(strength=0.9))
    assert batch_key(request(mode="image", strength=0.3)) != batch_key(request(mode="image", strength=0.9))


def test_every_request_field_is_either_per_image_or_in_the_key():
    names = {spec.name for spec in fields(GenerationRequest)}
    assert PER_IMAGE_FIELDS <= names
    key_names = {name for name, _ in batch_key(request())}  # type: ignore[attr-defined]
    assert key_names == names - PER_IMAGE_FIELDS


def test_a_unit_has_exactly_one_seed():
    with pytest.raises(ValueError, match="exactly one seed"):
        Unit(request(seeds=(1, 2)))


# --- UnitQueue ----------------------------------------------------------------------------------

def units(owner: str, count: int, arrived_s: float = 0.0, **changes: object) -> list[Unit]:
    return [Unit(request(seeds=(seed,), **changes), owner, arrived_s) for seed in range(count)]


def owners_and_seeds(batch: list[Unit]) -> list[tuple[str, int]]:
    return [(unit.owner, unit.request.seeds[0]) for unit in batch]


def test_one_owners_units_are_batched_oldest_first_up_to_the_limit():
    queue: UnitQueue[Unit] = UnitQueue()
    for unit in units("a", 5):
        queue.push(unit)
    assert len(queue) == 5 and queue.count(queue.leader().key) == 5  # type: ignore[union-attr]
    assert owners_and_seeds(queue.take(limit=3)) == [("a", 0), ("a", 1), ("a", 2)]
    assert owners_and_seeds(queue.take(limit=3)) == [("a", 3), ("a", 4)]
    assert len(queue) == 0 and queue.leader() is None and queue.take(limit=3) == []


def test_units_of_the_same_key_are_taken_round_robin_over_owners():
    queue: UnitQueue[Unit] = UnitQueue()
    for unit in [*units("a", 4), *units("b", 2), *units("c", 1)]:
        queue.push(unit)
    assert owners_and_seeds(queue.take(limit=5)) == [("a", 0), ("b", 0), ("c", 0), ("a", 1), ("b", 1)]


def test_a_batch_holds_only_the_key_its_leader_picked():
    queue: UnitQueue[Unit] = UnitQueue()
    for unit in [*units("a", 1, width=256), *units("a", 1), *units("b", 1), *units("a", 1, width=256)]:
        queue.push(unit)
    first = queue.take(limit=8)
    assert [unit.request.width for unit in first] == [256, 256]
    assert owners_and_seeds(queue.take(limit=8)) == [("b", 0), ("a", 0)]  # b's turn, a rides along


def test_a_second_owner_waits_at_most_one_batch_behind_a_long_request():
    queue: UnitQueue[Unit] = UnitQueue()
    for unit in units("a", 20):
        queue.push(unit)
    queue.push(Unit(request(width=256), "b"))
    assert {unit.owner for unit in queue.take(limit=8)} == {"a"}
    assert owners_and_seeds(queue.take(limit=8)) == [("b", 1)]
    assert len(queue.take(limit=8)) == 8


def test_an_owner_arriving_during_a_batch_goes_before_the_owner_that_just_picked():
    queue: UnitQueue[Unit] = UnitQueue()
    for unit in units("a", 20):
        queue.push(unit)
    queue.take(limit=8)  # a's first batch runs; b and c arrive meanwhile
    queue.push(Unit(request(width=256), "b"))
    queue.push(Unit(request(width=64), "c"))
    assert [unit.owner for unit in queue.take(limit=8)] == ["b"]
    assert [unit.owner for unit in queue.take(limit=8)] == ["c"]
    assert {unit.owner for unit in queue.take(limit=8)} == {"a"}


def test_an_owner_that_comes_back_does_not_jump_an_owner_that_is_waiting():
    queue: UnitQueue[Unit] = UnitQueue()
    for unit in [*units("a", 20), *units("b", 20, width=256)]:
        queue.push(unit)
    order = []
    for _ in range(6):
        queue.push(Unit(request(width=64), "c"))  # c keeps sending one image per batch
        order.append(queue.take(limit=8)[0].owner)
    assert order == ["a", "b", "c", "a", "b", "c"]


def test_oldest_arrival_remove_and_drain():
    queue: UnitQueue[Unit] = UnitQueue()
    late, early = Unit(request(), "a", arrived_s=5.0), Unit(request(), "b", arrived_s=2.0)
    queue.push(late)
    queue.push(early)
    assert queue.oldest_arrival() == 2.0
    assert queue.remove(early) and not queue.remove(early)
    assert queue.oldest_arrival() == 5.0 and len(queue) == 1
    assert queue.drain() == [late]
    assert len(queue) == 0 and queue.oldest_arrival() is None
