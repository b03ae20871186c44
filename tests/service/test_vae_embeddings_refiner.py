"""`vae`, `embeddings[]` and `refiner` of imageInference through the REST API, and all three at
once through the official Python SDK: effects measured on the images that come back."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image
from runware import IEmbedding, IRefiner

from kiln.models import CatalogEntry, inspect_model
from kiln.models.importer import catalog_entry
from tests.conftest import SDXL, decode_image, inference, new_uuid, post
from tests.images import data_uri, gradient
from tests.models.checkpoint_files import write_mini_refiner
from tests.test_runware_sdk import _with_client, request, run
from tests.tiny_extras import (
    build_refiner_folder,
    build_vae_folder,
    write_a1111_pt,
    write_a1111_safetensors,
    write_diffusers_bin,
    write_sdxl_embedding,
    write_vae_file,
)

VAE = "kiln:test-vae@1"  # SD 1.x, a single file in the LDM layout
VAE_XL = "kiln:test-vae-xl@1"  # SDXL, a diffusers folder
EMB = "kiln:test-emb@1"  # A1111 .safetensors, trigger "tinyemb"
EMB_PT = "kiln:test-emb-pt@1"  # A1111 .pt, trigger "tinyembpt"
EMB_BIN = "kiln:test-emb-bin@1"  # diffusers learned_embeds.bin, trigger "tinyconcept"
EMB_XL = "kiln:test-emb-xl@1"  # SDXL clip_l + clip_g, trigger "tinyembxl"
REFINER = "kiln:test-refiner@1"  # a diffusers folder
REFINER_FILE = "kiln:test-refiner-file@1"  # a single LDM file, CLIP's real vocabulary
LORA = "kiln:tiny-lora@1"


@pytest.fixture(scope="module", autouse=True)
def registered(services, tmp_path_factory) -> Iterator[None]:
    """The models above in the session's catalog for this module (modelSearch tests count its
    entries): VAEs and refiners registered as `kiln models add` registers them."""
    root = tmp_path_factory.mktemp("vae-embeddings-refiner")
    entries = []
    for air, path in (
        (VAE, write_vae_file(root / "tiny-vae.safetensors")),
        (VAE_XL, build_vae_folder(root / "tiny-vae-xl")),
        (REFINER, build_refiner_folder(root / "tiny-refiner")),
        (REFINER_FILE, write_mini_refiner(root / "mini-refiner.safetensors")),
    ):
        kind, header = inspect_model(path)
        entries.append(catalog_entry(path, kind, header, air, root / "configs"))
    for air, trigger, architecture, path in (
        (EMB, "tinyemb", "sd1x", write_a1111_safetensors(root / "tinyemb.safetensors")),
        (EMB_PT, "tinyembpt", "sd1x", write_a1111_pt(root / "tinyembpt.pt")),
        (EMB_BIN, "tinyconcept", "sd1x", write_diffusers_bin(root / "learned_embeds.bin")),
        (EMB_XL, "tinyembxl", "sdxl", write_sdxl_embedding(root / "tinyembxl.safetensors")),
    ):
        entries.append(CatalogEntry(air=air, name=trigger, version="1", category="embeddings",
                                    architecture=architecture, path=str(path)))
    for entry in entries:
        services.catalog.add(entry)
    yield
    for entry in entries:
        services.catalog.remove(entry.air)


def generate(client, **overrides) -> dict:
    """The one result item of an imageInference task (128 px PNG unless overridden)."""
    response = post(client, [inference(**overrides)])
    assert response.status_code == 200, response.text
    (item,) = response.json()["data"]
    image = decode_image(item)
    assert image.format == "PNG" and image.size == (overrides.get("width", 128), overrides.get("height", 128))
    return item


def array(item: dict) -> np.ndarray:
    return np.asarray(decode_image(item).convert("RGB"), dtype=np.int16)


def pixels(client, **overrides) -> np.ndarray:
    return array(generate(client, **overrides))


def differ(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


TEXT = 0.1
"""A visible change made through the text encoder: the random-weight tiny models react weakly
to text (as in test_prompt_weighting); a VAE or a refiner changes an image by more than 1."""


def error_of(client, **overrides) -> tuple[str, str]:
    response = post(client, [inference(**overrides)])
    assert response.status_code >= 400, response.text
    error = response.json()["errors"][0]
    return error["code"], error["parameter"]


# --- vae ------------------------------------------------------------------------------------------

def test_a_vae_replaces_the_models_vae_for_its_request_only(client):
    plain = generate(client)
    with_vae = generate(client, vae=VAE)
    assert differ(array(with_vae), array(plain)) > 1
    assert generate(client, vae=VAE)["imageBase64Data"] == with_vae["imageBase64Data"]  # same seed, same bytes
    assert generate(client)["imageBase64Data"] == plain["imageBase64Data"]  # the model's own VAE is back


def test_a_vae_folder_with_sdxl_also_encodes_the_seed_image(client):
    assert differ(pixels(client, model=SDXL, vae=VAE_XL), pixels(client, model=SDXL)) > 1
    seed = data_uri(gradient())
    edited = pixels(client, model=SDXL, vae=VAE_XL, seedImage=seed, strength=0.5)
    assert differ(edited, pixels(client, model=SDXL, seedImage=seed, strength=0.5)) > 1


def test_vae_errors_are_typed(client):
    assert error_of(client, vae=VAE_XL) == ("invalidVae", "vae")  # SDXL VAE, SD 1.x model
    assert error_of(client, model=SDXL, vae=VAE) == ("invalidVae", "vae")
    assert error_of(client, vae=LORA) == ("invalidVae", "vae")
    assert error_of(client, vae="kiln:no-such-vae@1") == ("unknownModel", "vae")


# --- embeddings -----------------------------------------------------------------------------------

def test_an_embedding_acts_where_its_trigger_word_is_and_changes_no_other_request(client):
    prompt = "a red circle tinyembpt on blue"
    literal = pixels(client, positivePrompt=prompt)  # the word as plain text, before any loading
    other = pixels(client, positivePrompt="a blue square")
    embedded = pixels(client, positivePrompt=prompt, embeddings=[{"model": EMB_PT}])
    assert differ(embedded, literal) > TEXT
    # loaded now, and kept: requests that do not list it are exactly what they were
    assert np.array_equal(pixels(client, positivePrompt=prompt), literal)
    assert np.array_equal(pixels(client, positivePrompt="a blue square"), other)
    # the trigger is a whole word in any case (CLIP lower-cases the rest of the prompt too)
    again = pixels(client, positivePrompt="A red circle TinyEmbPT on blue", embeddings=[{"model": EMB_PT}])
    assert np.array_equal(again, embedded)


def test_a1111_and_diffusers_files_load_and_differ(client):
    results = {}
    for air, trigger in ((EMB, "tinyemb"), (EMB_PT, "tinyembpt"), (EMB_BIN, "tinyconcept")):
        prompt = f"a red circle {trigger} on blue"
        results[air] = pixels(client, positivePrompt=prompt, embeddings=[{"model": air}])
        assert differ(results[air], pixels(client, positivePrompt=prompt)) > TEXT, air
    assert differ(results[EMB], results[EMB_PT]) > TEXT and differ(results[EMB_PT], results[EMB_BIN]) > TEXT


def test_an_sdxl_embedding_loads_into_both_text_encoders(client):
    prompt = "a red circle tinyembxl on blue"
    embedded = pixels(client, model=SDXL, positivePrompt=prompt, embeddings=[{"model": EMB_XL}])
    assert differ(embedded, pixels(client, model=SDXL, positivePrompt=prompt)) > TEXT


def test_weight_negative_prompt_and_prompt_weighting_apply_to_embeddings(client):
    prompt = "a red circle tinyemb on blue"
    listed = [{"model": EMB}]
    embedded = pixels(client, positivePrompt=prompt, embeddings=listed)
    assert differ(pixels(client, positivePrompt=prompt, embeddings=[{"model": EMB, "weight": 0.5}]), embedded) > TEXT
    negative = pixels(client, negativePrompt="tinyemb", embeddings=listed)
    assert differ(negative, pixels(client, negativePrompt="tinyemb")) > TEXT
    for syntax, weighted in (("compel", "a red circle (tinyemb)1.6 on blue"),
                             ("sdEmbeds", "a red circle (tinyemb:1.6) on blue")):
        unweighted = pixels(client, positivePrompt=prompt, embeddings=listed, promptWeighting=syntax)
        assert differ(unweighted, pixels(client, positivePrompt=prompt, promptWeighting=syntax)) > TEXT, syntax
        heavier = pixels(client, positivePrompt=weighted, embeddings=listed, promptWeighting=syntax)
        assert differ(heavier, unweighted) > TEXT, syntax


def test_embedding_errors_are_typed(client):
    prompt = "a red circle tinyemb tinyembxl"
    assert error_of(client, embeddings=[{"model": EMB}], positivePrompt="a red circle") == (
        "invalidEmbeddings", "embeddings[0].model")  # the trigger word is in neither prompt
    assert error_of(client, positivePrompt=prompt, embeddings=[{"model": EMB}, {"model": EMB_XL}]) == (
        "invalidEmbeddings", "embeddings[1].model")  # SDXL embedding, SD 1.x model
    assert error_of(client, embeddings=[{"model": LORA}]) == ("invalidEmbeddings", "embeddings[0].model")
    assert error_of(client, positivePrompt=prompt, embeddings=[{"model": EMB}, {"model": "kiln:nope@1"}]) == (
        "unknownModel", "embeddings[1].model")
    assert error_of(client, positivePrompt=prompt, embeddings=[{"model": EMB, "weight": 5}]) == (
        "invalidEmbeddings", "embeddings[0].weight")
    assert error_of(client, positivePrompt=prompt, embeddings=[{"model": EMB}, {"model": EMB}]) == (
        "invalidEmbeddings", "embeddings[1].model")


def test_model_search_gives_an_embeddings_trigger_word(client):
    response = post(client, [{"taskType": "modelSearch", "taskUUID": new_uuid(), "category": "embeddings"}])
    results = {r["air"]: r for r in response.json()["data"][0]["results"]}
    assert results[EMB]["positiveTriggerWords"] == "tinyemb"
    assert results[EMB_XL]["positiveTriggerWords"] == "tinyembxl"


# --- refiner --------------------------------------------------------------------------------------

def test_a_refiner_finishes_what_the_sdxl_model_began(client):
    base = pixels(client, model=SDXL, steps=4)
    refined = generate(client, model=SDXL, steps=4, refiner={"model": REFINER, "startStepPercentage": 50})
    assert differ(array(refined), base) > 1
    same = generate(client, model=SDXL, steps=4, refiner={"model": REFINER, "startStepPercentage": 50})
    by_step = generate(client, model=SDXL, steps=4, refiner={"model": REFINER, "startStep": 2})
    assert same["imageBase64Data"] == by_step["imageBase64Data"] == refined["imageBase64Data"]
    later = pixels(client, model=SDXL, steps=4, refiner={"model": REFINER, "startStep": 3})
    assert differ(later, array(refined)) > 0.5
    # both stages read weighted prompts (the refiner with its one text encoder)
    weighted = pixels(client, model=SDXL, steps=4, refiner={"model": REFINER, "startStep": 2},
                      positivePrompt="a red (circle)1.6 on blue", promptWeighting="compel")
    assert differ(weighted, pixels(client, model=SDXL, steps=4, refiner={"model": REFINER, "startStep": 2},
                                   positivePrompt="a red circle on blue", promptWeighting="compel")) > TEXT


def test_a_refiner_follows_image_to_image_and_decodes_with_the_requests_vae(client):
    seed = data_uri(gradient())
    refiner = {"model": REFINER, "startStepPercentage": 60}
    edited = pixels(client, model=SDXL, steps=4, seedImage=seed, strength=0.7, refiner=refiner)
    assert differ(edited, pixels(client, model=SDXL, steps=4, seedImage=seed, strength=0.7)) > 1
    with_vae = pixels(client, model=SDXL, steps=4, refiner=refiner, vae=VAE_XL)
    assert differ(with_vae, pixels(client, model=SDXL, steps=4, refiner=refiner)) > 1


def test_a_single_file_refiner_registered_like_kiln_models_add(client):
    refined = pixels(client, model=SDXL, steps=4, refiner={"model": REFINER_FILE, "startStep": 3})
    assert differ(refined, pixels(client, model=SDXL, steps=4)) > 1


def test_refiner_errors_are_typed(client):
    refiner = {"model": REFINER, "startStepPercentage": 50}
    assert error_of(client, refiner=refiner) == ("invalidRefiner", "refiner.model")  # SD 1.x model
    assert error_of(client, model=SDXL, refiner={"model": SDXL}) == ("invalidRefiner", "refiner.model")
    assert error_of(client, model=SDXL, refiner={"model": LORA}) == ("invalidRefiner", "refiner.model")
    assert error_of(client, model=SDXL, refiner={"model": "kiln:nope@1"}) == ("unknownModel", "refiner.model")
    assert error_of(client, model=SDXL, steps=4, refiner={**refiner, "startStep": 2}) == (
        "invalidRefiner", "refiner.startStep")
    assert error_of(client, model=SDXL, steps=4, refiner={"model": REFINER, "startStep": 5}) == (
        "invalidRefiner", "refiner.startStep")
    assert error_of(client, model=SDXL, refiner={"model": REFINER, "startStepPercentage": 100}) == (
        "invalidRefiner", "refiner.startStepPercentage")
    assert error_of(client, model=REFINER) == ("invalidModel", "model")
    # diffusers' SDXL ControlNet image-to-image pipeline cannot stop part-way
    seed = data_uri(gradient())
    controlnet = [{"model": "kiln:tiny-controlnet-sdxl@1", "guideImage": seed}]
    assert error_of(client, model=SDXL, seedImage=seed, controlNet=controlnet, refiner=refiner) == (
        "invalidRefiner", "refiner")


# --- the official Python SDK ----------------------------------------------------------------------

def test_the_python_sdk_sends_vae_embeddings_and_refiner(ws_url):
    prompt = "a red circle tinyembxl on blue"

    async def body(rw):
        plain = await rw.imageInference(requestImage=request(
            model=SDXL, positivePrompt=prompt, numberResults=1, steps=4))
        full = await rw.imageInference(requestImage=request(
            model=SDXL, positivePrompt=prompt, numberResults=1, steps=4, vae=VAE_XL,
            embeddings=[IEmbedding(model=EMB_XL, weight=0.8)],
            refiner=IRefiner(model=REFINER, startStepPercentage=50),
        ))
        return plain[0], full[0]

    plain, full = run(_with_client(ws_url, body))
    images = [Image.open(io.BytesIO(base64.b64decode(result.imageBase64Data))) for result in (plain, full)]
    assert all(image.format == "PNG" and image.size == (128, 128) for image in images)
    arrays = [np.asarray(image.convert("RGB"), dtype=np.int16) for image in images]
    assert differ(arrays[0], arrays[1]) > 1
