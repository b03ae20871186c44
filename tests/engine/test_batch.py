"""Engine.generate_batch: compatible one-seed requests share pipeline calls, each image stays
its own (within 2 grey levels of the request alone), and one request's fault fails only it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

import kiln.engine.families
from kiln.engine import Engine
from kiln.engine.demo_models import build_tiny_controlnet, build_tiny_lora, build_tiny_sd_inpaint
from kiln.errors import InferenceError, InvalidRequestError, KilnError, ModelLoadError
from kiln.executor.batching import batch_key
from kiln.generation import (
    ControlNetInput,
    EmbeddingInput,
    GenerationRequest,
    LoraInput,
    ModelSpec,
    RefinerInput,
)
from tests.images import max_difference
from tests.tiny_extras import build_refiner_folder, build_vae_folder, write_sdxl_embedding

from .helpers import TinyModels, make_request, text_encoder_passes

PROMPTS = ("the cat", "a dog and the cat", "the red house on a hill", "the cat and the dog")


@pytest.fixture(scope="module")
def extra(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelSpec]:
    root = tmp_path_factory.mktemp("batch-models")
    return {
        "inpaint": ModelSpec("test:inpaint@1", "sd1x", str(build_tiny_sd_inpaint(root / "inpaint"))),
        "canny": ModelSpec("test:cn-a@1", "sd1x", str(build_tiny_controlnet(root / "cn-a"))),
        "depth": ModelSpec("test:cn-b@1", "sd1x", str(build_tiny_controlnet(root / "cn-b"))),
        "lora": ModelSpec("test:lora@1", "sd1x", str(build_tiny_lora(root / "lora"))),
        "vae-xl": ModelSpec("test:vae-xl@1", "sdxl", str(build_vae_folder(root / "vae-xl"))),
        "embedding-xl": ModelSpec("test:emb-xl@1", "sdxl", str(write_sdxl_embedding(root / "emb.safetensors"))),
        "refiner": ModelSpec("test:refiner@1", "sdxl", str(build_refiner_folder(root / "refiner"))),
    }


def picture(shift: int) -> Image.Image:
    x = np.linspace(0, 255, 64).astype(np.uint8)
    rgb = np.stack([np.tile(x, (64, 1)), np.tile(x[:, None], (1, 64)), 255 - np.tile(x, (64, 1))], -1)
    return Image.fromarray(np.roll(rgb, 9 * shift, axis=1))


def centre_mask() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    return mask


def variants(request: GenerationRequest) -> list[GenerationRequest]:
    """Four requests that may share a call: other prompts, seeds and input images."""
    batch = []
    for i, prompt in enumerate(PROMPTS):
        changes: dict[str, object] = {"positive_prompt": prompt, "seeds": (40 + i,)}
        if i % 2:
            changes["negative_prompt"] = "blurry"
        if request.init_image is not None:
            changes["init_image"] = picture(i)
        if request.controlnets:
            changes["controlnets"] = tuple(
                replace(control, guide_image=picture(i + 3 * k + 1))
                for k, control in enumerate(request.controlnets)
            )
        batch.append(replace(request, **changes))  # type: ignore[arg-type]
    return batch


def pixels(image: object) -> np.ndarray:
    assert isinstance(image, Image.Image), image
    return np.asarray(image, dtype=np.int16)


def check_batch(engine: Engine, batch: list[GenerationRequest], calls: int = 1) -> None:
    """One pipeline call (or `calls`); each image within 2 grey levels of its request alone;
    the same batch again gives the same bytes."""
    assert len({batch_key(request) for request in batch}) == 1  # a batch the executor forms
    before = engine.pipeline_calls
    results = engine.generate_batch(batch)
    assert engine.pipeline_calls - before == calls
    alone = [engine.generate(request)[0] for request in batch]
    for request, result, solo in zip(batch, results, alone, strict=True):
        assert result.size == (request.width, request.height) and result.mode == "RGB"
        assert max_difference(result, solo) <= 2
    assert len({pixels(result).tobytes() for result in results}) == len(batch)
    again = engine.generate_batch(batch)
    assert [r.tobytes() for r in again] == [r.tobytes() for r in results]  # type: ignore[union-attr]


@pytest.mark.parametrize("arch", ["sd", "sdxl"])
def test_a_batch_is_one_call_and_each_image_matches_its_request_alone(
    engine: Engine, tiny: TinyModels, arch: str
) -> None:
    check_batch(engine, variants(make_request(getattr(tiny, arch))))


@pytest.mark.parametrize("arch", ["sd", "sdxl"])
@pytest.mark.parametrize("weighting", [None, "compel"])
def test_requests_with_the_same_prompts_encode_them_once(
    engine: Engine, tiny: TinyModels, arch: str, weighting: str | None
) -> None:
    """Four images of one prompt (a task's numberResults) and two of another, all with the same
    negative prompt: the text encoders run as often as for the two prompts alone."""
    model = getattr(tiny, arch)
    first = make_request(model, negative_prompt="blurry", prompt_weighting=weighting)
    second = replace(first, positive_prompt="the red house on a hill")
    batch = [replace(first, seeds=(seed,)) for seed in (1, 2, 3, 4)]
    batch += [replace(second, seeds=(seed,)) for seed in (5, 6)]
    assert text_encoder_passes(engine, batch) == text_encoder_passes(engine, [first, second]) > 0
    check_batch(engine, batch)


@pytest.mark.parametrize("arch", ["sd", "sdxl"])
def test_distinct_prompts_of_a_batch_share_their_text_encoder_passes(
    engine: Engine, tiny: TinyModels, arch: str
) -> None:
    """Four requests with four prompts (two with a negative prompt, two without) run the text
    encoders no more often than two of them."""
    batch = variants(make_request(getattr(tiny, arch)))
    assert text_encoder_passes(engine, batch) == text_encoder_passes(engine, batch[:2])
    weighted = [replace(request, prompt_weighting="compel") for request in batch]
    assert text_encoder_passes(engine, weighted) > text_encoder_passes(engine, weighted[:2])


def test_a_batch_of_one_is_exactly_the_plain_diffusers_call(engine: Engine, tiny: TinyModels) -> None:
    [image] = engine.generate_batch([make_request(tiny.sd, seeds=(3,))])
    pipe = StableDiffusionPipeline.from_pretrained(
        tiny.sd.path, local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    plain = pipe("the cat and the dog", num_inference_steps=2, guidance_scale=7.0, width=64,
                 height=64, generator=torch.Generator().manual_seed(3)).images[0]
    assert isinstance(image, Image.Image) and image.tobytes() == plain.tobytes()


def test_an_ancestral_sampler_draws_each_images_noise_from_its_own_seed(
    engine: Engine, tiny: TinyModels
) -> None:
    check_batch(engine, variants(make_request(tiny.sd, scheduler="Euler a", steps=3)))


def test_weighted_prompts_batch_together(engine: Engine, tiny: TinyModels) -> None:
    base = make_request(tiny.sd, prompt_weighting="sdEmbeds")
    batch = [replace(r, positive_prompt=f"({r.positive_prompt}:1.3) [blurry]") for r in variants(base)]
    check_batch(engine, batch)


def test_prompt_embeddings_of_other_shapes_run_in_their_own_calls(
    engine: Engine, tiny: TinyModels
) -> None:
    long_prompt = "the cat and the dog on a red hill " * 8  # two windows of the text encoder
    short_a, short_b, long_a, long_b = variants(make_request(tiny.sd))
    batch = [short_a, replace(long_a, positive_prompt=long_prompt), short_b,
             replace(long_b, positive_prompt=long_prompt + " at night")]
    check_batch(engine, batch, calls=2)


@pytest.mark.parametrize("arch", ["sd", "sdxl"])
@pytest.mark.parametrize("mode", ["image", "inpaint"])
def test_image_to_image_and_inpainting_batch_with_their_own_seed_images(
    engine: Engine, tiny: TinyModels, arch: str, mode: str
) -> None:
    request = make_request(getattr(tiny, arch), mode=mode, init_image=picture(0), strength=0.7,
                           mask_image=centre_mask() if mode == "inpaint" else None)
    check_batch(engine, variants(request))


def test_the_inpainting_model_batches(engine: Engine, extra: dict[str, ModelSpec]) -> None:
    request = make_request(extra["inpaint"], mode="inpaint", init_image=picture(0),
                           mask_image=centre_mask(), strength=1.0)
    check_batch(engine, variants(request))


@pytest.mark.parametrize("mode", ["text", "image", "inpaint"])
def test_controlnets_batch_with_their_own_guide_images(
    engine: Engine, tiny: TinyModels, extra: dict[str, ModelSpec], mode: str
) -> None:
    controls = (ControlNetInput(extra["canny"], picture(1), 0.8, 0.0, 0.9, "prompt"),
                ControlNetInput(extra["depth"], picture(2), 1.2, 0.1, 1.0, "controlnet"))
    request = make_request(tiny.sd, mode=mode, controlnets=controls,
                           init_image=None if mode == "text" else picture(0), strength=0.8,
                           mask_image=centre_mask() if mode == "inpaint" else None)
    check_batch(engine, variants(request))


def test_a_guide_image_steers_only_its_own_image(
    engine: Engine, tiny: TinyModels, extra: dict[str, ModelSpec]
) -> None:
    request = make_request(tiny.sd, controlnets=(ControlNetInput(extra["canny"], picture(1)),))
    other_guide = replace(request, controlnets=(ControlNetInput(extra["canny"], picture(5)),))
    first = engine.generate_batch([request, request])
    second = engine.generate_batch([request, other_guide])
    assert pixels(first[0]).tobytes() == pixels(second[0]).tobytes()
    assert np.abs(pixels(first[1]) - pixels(second[1])).mean() > 1


def test_loras_batch(engine: Engine, tiny: TinyModels, extra: dict[str, ModelSpec]) -> None:
    check_batch(engine, variants(make_request(tiny.sd, loras=(LoraInput(extra["lora"], 0.8),))))


@pytest.mark.parametrize("mode", ["text", "image", "inpaint"])
def test_a_refiner_with_a_vae_and_an_embedding_runs_both_stages_batched(
    engine: Engine, tiny: TinyModels, extra: dict[str, ModelSpec], mode: str
) -> None:
    request = make_request(
        tiny.sdxl, steps=4, mode=mode, init_image=None if mode == "text" else picture(0), strength=0.8,
        mask_image=centre_mask() if mode == "inpaint" else None, vae=extra["vae-xl"],
        embeddings=(EmbeddingInput(extra["embedding-xl"], "tinyembxl", 1.0),),
        refiner=RefinerInput(extra["refiner"], 0.5),
    )
    check_batch(engine, [replace(r, positive_prompt=f"{r.positive_prompt} tinyembxl") for r in variants(request)])


def test_strength_0_gives_each_request_its_own_seed_image(engine: Engine, tiny: TinyModels) -> None:
    batch = variants(make_request(tiny.sd, mode="image", init_image=picture(0), strength=0.0))
    before = engine.pipeline_calls
    results = engine.generate_batch(batch)
    assert engine.pipeline_calls == before
    for request, result in zip(batch, results, strict=True):
        assert pixels(result).tobytes() == pixels(request.init_image).tobytes()


def test_a_request_that_fails_its_own_checks_fails_alone(engine: Engine, tiny: TinyModels) -> None:
    good_a, good_b, _, _ = variants(make_request(tiny.sd, mode="inpaint", init_image=picture(0),
                                                 mask_image=centre_mask()))
    batch = [
        good_a,
        replace(good_a, width=60),
        replace(good_a, mask_image=Image.new("L", (32, 32))),
        replace(good_a, positive_prompt='("a", "b").blend(1', prompt_weighting="compel"),
        replace(good_a, clip_skip=3),
        replace(good_a, seeds=(-1,)),
        good_b,
    ]
    before = engine.pipeline_calls
    results = engine.generate_batch(batch)
    parameters = [getattr(r, "parameter", None) for r in results]
    assert parameters == [None, "width", "maskImage", "positivePrompt", "clipSkip", "seed", None]
    assert all(isinstance(r, InvalidRequestError) for r in results[1:6])
    assert engine.pipeline_calls - before == 1  # the two good ones
    for request, result in ((good_a, results[0]), (good_b, results[6])):
        assert isinstance(result, Image.Image), result
        assert max_difference(result, engine.generate(request)[0]) <= 2


def test_a_failing_shared_call_is_rerun_one_by_one(
    engine: Engine, tiny: TinyModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = variants(make_request(tiny.sd))
    batch[2] = replace(batch[2], seeds=(666,))
    expected = [engine.generate(request)[0] for request in batch]
    run = StableDiffusionPipeline.__call__

    def fails_on_seed_666(self: StableDiffusionPipeline, *args: object, **kwargs: object) -> object:
        generators = kwargs["generator"]
        if any(g.initial_seed() == 666 for g in (generators if isinstance(generators, list) else [generators])):
            raise RuntimeError("bad input for seed 666")
        return run(self, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", fails_on_seed_666)
    before = engine.pipeline_calls
    results = engine.generate_batch(batch)
    assert engine.pipeline_calls - before == 1 + 4
    assert isinstance(results[2], InferenceError) and "seed 666" in str(results[2])
    for index in (0, 1, 3):  # alone, so exactly their solo images
        assert pixels(results[index]).tobytes() == pixels(expected[index]).tobytes()


def test_an_engine_fault_fails_the_requests_it_touches_and_no_others(
    engine: Engine, tiny: TinyModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline_class = kiln.engine.families.pipeline_class

    def broken_for_edits(architecture: str, mode: str, controlnet: bool) -> object:
        if mode == "image":
            raise RuntimeError("no pipeline class")
        return pipeline_class(architecture, mode, controlnet)  # type: ignore[arg-type]

    monkeypatch.setattr(kiln.engine.families, "pipeline_class", broken_for_edits)
    edit = make_request(tiny.sd, mode="image", init_image=picture(0), strength=0.5)
    results = engine.generate_batch([edit, make_request(tiny.sd), replace(edit, seeds=(9,))])
    assert isinstance(results[0], InferenceError) and "no pipeline class" in str(results[0])
    assert isinstance(results[1], Image.Image) and isinstance(results[2], InferenceError)


def test_requests_that_cannot_share_a_call_still_run(
    engine: Engine, tiny: TinyModels, extra: dict[str, ModelSpec], tmp_path: Path
) -> None:
    missing = ModelSpec("test:missing@1", "sd1x", str(tmp_path / "nowhere"))
    batch = [
        make_request(tiny.sd),
        make_request(tiny.sd, width=128),
        make_request(missing),
        make_request(tiny.sdxl),
        make_request(tiny.sd, loras=(LoraInput(extra["lora"], 1.0),)),
        make_request(missing, seeds=(2,)),
    ]
    results = engine.generate_batch(batch)
    assert isinstance(results[2], ModelLoadError) and isinstance(results[5], ModelLoadError)
    for index in (0, 1, 3, 4):
        assert pixels(results[index]).tobytes() == pixels(engine.generate(batch[index])[0]).tobytes()


def test_generate_batch_takes_one_seed_per_request(engine: Engine, tiny: TinyModels) -> None:
    with pytest.raises(ValueError, match="one seed"):
        engine.generate_batch([make_request(tiny.sd, seeds=(1, 2))])
    assert engine.generate_batch([]) == []


def test_results_are_images_or_kiln_errors(engine: Engine, tiny: TinyModels) -> None:
    results = engine.generate_batch([make_request(tiny.sd), make_request(tiny.sd, steps=0)])
    assert isinstance(results[0], Image.Image) and isinstance(results[1], KilnError)
