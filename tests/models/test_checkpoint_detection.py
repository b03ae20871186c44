"""Single-file checkpoints are recognised from their header alone and load with the config folder
Kiln writes for them; other files are told apart or refused, saying what they are."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionXLImg2ImgPipeline
from diffusers.loaders.single_file_utils import infer_diffusers_model_type
from PIL import Image
from safetensors.torch import load_file, save_file

from kiln.cli import main
from kiln.engine.single_file import write_single_file_checkpoint
from kiln.models import Catalog, CatalogEntry
from kiln.models.checkpoints import UnrecognisedModelError, inspect_model
from kiln.models.configs import config_files
from kiln.storage import Database
from tests.conftest import decode_image, inference, post
from tests.models.checkpoint_files import (
    ADAPTER_FILES,
    CLIP_L,
    OPEN_CLIP_BIG_G,
    OPEN_CLIP_H,
    PUBLISHED_UNETS,
    PUBLISHED_VAE,
    build_mini_sd,
    build_mini_sdxl,
    published_ldm_shapes,
    write_header_only,
    write_mini_refiner,
    write_small,
)

# (shapes of, UNet input channels, metadata) → what Kiln says, and what diffusers' own detector says
KINDS = {
    "sd15": (("sd1", 4, {}), ("sd1x", "base", "epsilon", "v1")),
    "sd15-inpainting": (("sd1", 9, {}), ("sd1x", "inpainting", "epsilon", "inpainting")),
    "sd21-768-v": (("sd2", 4, {}), ("sd1x", "base", "v_prediction", "v2")),
    "sd21-base": (("sd2", 4, {"modelspec.prediction_type": "epsilon"}), ("sd1x", "base", "epsilon", "v2")),
    "sd2-inpainting": (("sd2", 9, {}), ("sd1x", "inpainting", "epsilon", "inpainting_v2")),
    "sdxl-base": (("sdxl", 4, {}), ("sdxl", "base", "epsilon", "xl_base")),
    "sdxl-inpainting": (("sdxl", 9, {}), ("sdxl", "inpainting", "epsilon", "xl_inpaint")),
    "sdxl-refiner": (("sdxl-refiner", 4, {}), ("sdxl", "refiner", "epsilon", "xl_refiner")),
}


@pytest.mark.parametrize("name", list(KINDS))
def test_real_checkpoint_headers_are_recognised_without_reading_weights(tmp_path, name):
    (shapes_of, channels, metadata), (architecture, kind_type, prediction, diffusers_type) = KINDS[name]
    shapes = published_ldm_shapes(shapes_of, in_channels=channels)
    # diffusers' own detector agrees that these are the real checkpoints' tensors
    assert infer_diffusers_model_type({k: torch.empty(v, device="meta") for k, v in shapes.items()}) == diffusers_type
    path = write_header_only(tmp_path / f"{name}.safetensors", shapes, metadata)
    assert path.stat().st_blocks * 512 < 2**20 < path.stat().st_size  # a sparse file: nothing to read

    kind, header = inspect_model(path)

    assert (kind.category, kind.architecture, kind.type, kind.prediction) == (
        "checkpoint", architecture, kind_type, prediction)
    assert header is not None and len(header.shapes) == len(shapes)
    assert bool(kind.notes) == (name == "sd21-768-v")  # the one guess: SD 2.x base predicts v


@pytest.mark.parametrize("name", list(KINDS))
def test_the_derived_configs_are_the_published_ones(tmp_path, name):
    (shapes_of, channels, metadata), _ = KINDS[name]
    kind, header = inspect_model(write_header_only(
        tmp_path / "model.safetensors", published_ldm_shapes(shapes_of, in_channels=channels), metadata))
    assert header is not None
    files = {path: json.loads(text) for path, text in config_files(header, kind).items() if path.endswith(".json")}

    unet = files["unet/config.json"]
    published = {**PUBLISHED_UNETS[shapes_of], "in_channels": channels}
    if name in ("sd21-base", "sd2-inpainting"):  # the 512 models of SD 2.x, not 2.1's 768-v
        published |= {"sample_size": 64, "upcast_attention": False}
    assert {key: unet.get(key, 1 if key == "transformer_layers_per_block" else None) for key in published} == published
    assert {k: files["vae/config.json"][k] for k in PUBLISHED_VAE} == PUBLISHED_VAE
    assert files["vae/config.json"]["scaling_factor"] == (0.13025 if shapes_of.startswith("sdxl") else 0.18215)

    encoders = {"sd1": [CLIP_L], "sd2": [OPEN_CLIP_H], "sdxl": [CLIP_L, OPEN_CLIP_BIG_G],
                "sdxl-refiner": [OPEN_CLIP_BIG_G]}[shapes_of]
    folders = ["text_encoder_2"] if shapes_of == "sdxl-refiner" else ["text_encoder", "text_encoder_2"]
    for folder, expected in zip(folders, encoders, strict=False):
        assert {k: files[f"{folder}/config.json"][k] for k in expected} == expected

    index = files["model_index.json"]
    assert index["_class_name"] == {
        "sd15": "StableDiffusionPipeline", "sd15-inpainting": "StableDiffusionInpaintPipeline",
        "sd21-768-v": "StableDiffusionPipeline", "sd21-base": "StableDiffusionPipeline",
        "sd2-inpainting": "StableDiffusionInpaintPipeline", "sdxl-base": "StableDiffusionXLPipeline",
        "sdxl-inpainting": "StableDiffusionXLInpaintPipeline", "sdxl-refiner": "StableDiffusionXLImg2ImgPipeline",
    }[name]
    scheduler = files["scheduler/scheduler_config.json"]
    assert scheduler["prediction_type"] == KINDS[name][1][2]
    pad = {"tokenizer": "<|endoftext|>" if shapes_of in ("sd1", "sdxl") else "!", "tokenizer_2": "!"}
    for folder in ("tokenizer", "tokenizer_2"):
        if f"{folder}/special_tokens_map.json" in files:
            assert files[f"{folder}/special_tokens_map.json"]["pad_token"] == pad[folder]


def test_a_v_prediction_marker_makes_an_sdxl_checkpoint_v_prediction(tmp_path):
    shapes = published_ldm_shapes("sdxl") | {"v_pred": (0,), "ztsnr": (0,)}
    kind, header = inspect_model(write_header_only(tmp_path / "noob-vpred.safetensors", shapes))
    assert (kind.prediction, kind.zero_snr, kind.variant) == ("v_prediction", True, "sdxl-v")
    assert header is not None
    scheduler = json.loads(config_files(header, kind)["scheduler/scheduler_config.json"])
    assert scheduler["prediction_type"] == "v_prediction" and scheduler["rescale_betas_zero_snr"] is True


@pytest.mark.parametrize("name", list(ADAPTER_FILES))
def test_loras_controlnets_vaes_and_embeddings_are_told_apart(tmp_path, name):
    tensors, expected = ADAPTER_FILES[name]
    kind, _ = inspect_model(write_small(tmp_path / name, tensors))
    assert (kind.category, kind.architecture, kind.conditioning) == expected


def test_an_a1111_pt_embedding_is_read_without_running_its_pickle(tmp_path):
    path = tmp_path / "bad_hands.pt"
    torch.save({"string_to_param": {"*": torch.zeros(6, 768)}, "name": "bad_hands", "step": 1000}, path)
    kind, header = inspect_model(path)
    assert (kind.category, kind.architecture) == ("embeddings", "sd1x")
    assert header is not None and header.shapes["string_to_param.*"] == (6, 768)


@pytest.mark.parametrize(("tensors", "suffix", "said"), [
    ({"double_blocks.0.img_attn.qkv.weight": (9, 3)}, ".safetensors", "a Flux model"),
    ({"foo.weight": (3,), "foo.bias": (3,), "bar.scale": (1,), "baz": (2, 2, 2)}, ".safetensors",
     "unknown: 4 tensors, top-level prefixes foo. (2), bar. (1), baz (1)"),
    (None, ".safetensors", "not a readable .safetensors file"),
    (None, ".ckpt", "a pickle file"),
])
def test_files_kiln_does_not_run_are_refused_saying_what_they_are(tmp_path, tensors, suffix, said):
    path = tmp_path / f"model{suffix}"
    if tensors is None:
        path.write_bytes(b"\x80\x02not a model" * 100)
    else:
        write_small(path, tensors)
    with pytest.raises(UnrecognisedModelError) as raised:
        inspect_model(path)
    assert said in str(raised.value)


def test_an_instruct_pix2pix_checkpoint_is_refused_by_name(tmp_path):
    path = write_header_only(tmp_path / "ip2p.safetensors", published_ldm_shapes("sd1", in_channels=8))
    with pytest.raises(UnrecognisedModelError, match="InstructPix2Pix"):
        inspect_model(path)


# ---- through the command line and the API ----------------------------------------------------


@pytest.fixture(scope="module")
def mini_checkpoints(tmp_path_factory):
    """SD 1.x and SDXL checkpoints as single LDM files, with the folders they were written from."""
    root = tmp_path_factory.mktemp("mini")
    made = {}
    for architecture, build in (("sd1x", build_mini_sd), ("sdxl", build_mini_sdxl)):
        folder = build(root / f"mini-{architecture}")
        write_single_file_checkpoint(folder, root / f"mini-{architecture}.safetensors", architecture)
        made[architecture] = (folder, root / f"mini-{architecture}.safetensors")
    return made


@pytest.mark.parametrize("architecture", ["sd1x", "sdxl"])
def test_kiln_models_add_file_alone_registers_a_checkpoint_that_generates(
    client, services, capsys, monkeypatch, mini_checkpoints, architecture
):
    folder, checkpoint = mini_checkpoints[architecture]
    monkeypatch.setattr("kiln.cli.models.PROGRESS_BAR_BYTES", 0)  # the bar of multi-GB files, for this small one
    if services.settings.database_url:  # the command registers in the server's database
        monkeypatch.setenv("KILN_DATABASE_URL", services.settings.database_url)
    assert main(["--data-dir", str(services.settings.data_dir), "models", "add", str(checkpoint)]) == 0
    out, err = capsys.readouterr()
    assert f"reading {checkpoint.name}" in err
    air = next(word for word in out.split() if word.startswith("local:"))
    entry = services.catalog.get(air)
    assert (entry.category, entry.architecture, entry.type) == ("checkpoint", architecture, "base")
    assert entry.config_path.startswith(str(services.settings.models_dir / "configs"))
    services.catalog.add(CatalogEntry(
        air=f"test:mini-{architecture}-folder@1", name="folder", version="1", category="checkpoint",
        architecture=architecture, path=str(folder),
    ))

    from_file = post(client, [inference(model=air)]).json()["data"][0]
    from_folder = post(client, [inference(model=f"test:mini-{architecture}-folder@1")]).json()["data"][0]

    a = np.asarray(decode_image(from_file), dtype=np.int16)
    b = np.asarray(decode_image(from_folder), dtype=np.int16)
    assert np.abs(a - b).max() <= 1


def test_kiln_models_add_refuses_a_checkpoint_that_does_not_load(tmp_path, capsys, mini_checkpoints):
    _, checkpoint = mini_checkpoints["sd1x"]
    tensors = load_file(str(checkpoint))
    del tensors["model.diffusion_model.out.2.bias"]  # detection does not look at it; loading does
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken))

    truncated = tmp_path / "truncated.safetensors"  # an interrupted download
    truncated.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])

    assert main(["--data-dir", str(tmp_path), "models", "add", str(broken)]) == 2
    err = capsys.readouterr().err
    assert f"kiln: {broken} does not load, so it is not registered: model local:broken@" in err
    assert "could not be loaded" in err
    assert main(["--data-dir", str(tmp_path), "models", "add", str(truncated)]) == 2
    assert "truncated.safetensors is not a readable .safetensors file" in capsys.readouterr().err
    assert main(["--data-dir", str(tmp_path), "models", "list"]) == 0
    assert capsys.readouterr().out == ""


def test_kiln_models_add_says_what_a_file_is_when_it_is_not_what_was_asked(tmp_path, capsys):
    lora, expected = ADAPTER_FILES["detail_kohya.safetensors"]
    path = write_small(tmp_path / "detail.safetensors", lora)
    assert main(["--data-dir", str(tmp_path), "models", "add", str(path), "--category", "checkpoint"]) == 2
    assert "detail.safetensors is an SD 1.x LoRA (lora_unet_*/lora_te* keys), not a checkpoint" in capsys.readouterr().err

    unknown_base = write_small(tmp_path / "tiny.safetensors", {"lora_unet_x_attn2_to_k.lora_down.weight": (4, 32)})
    assert main(["--data-dir", str(tmp_path), "models", "add", str(unknown_base)]) == 2
    assert "pass --architecture" in capsys.readouterr().err
    assert main(["--data-dir", str(tmp_path), "models", "add", str(unknown_base), "--architecture", "sd1x"]) == 0
    assert "(lora, sd1x)" in capsys.readouterr().out


@pytest.mark.parametrize("layout", ["ldm", "diffusers"])
def test_a_single_file_vae_gets_a_config_it_loads_with(tmp_path, mini_checkpoints, layout):
    folder, checkpoint = mini_checkpoints["sd1x"]
    path = tmp_path / "vae-ft-mse.safetensors"
    if layout == "ldm":  # as A1111 and ComfyUI users have them
        vae = {k.removeprefix("first_stage_model."): v for k, v in load_file(str(checkpoint)).items()
               if k.startswith("first_stage_model.")}
        save_file(vae, str(path))
    else:
        path.write_bytes((folder / "vae" / "diffusion_pytorch_model.safetensors").read_bytes())

    assert main(["--data-dir", str(tmp_path), "models", "add", str(path), "--air", "test:vae@1"]) == 0

    entry = Catalog(Database(tmp_path / "kiln.sqlite3")).get("test:vae@1")
    assert (entry.category, entry.architecture) == ("vae", "sd1x")
    loaded = AutoencoderKL.from_single_file(entry.path, config=entry.config_path, local_files_only=True)
    expected = AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True).state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in loaded.state_dict().items())
    assert loaded.config.scaling_factor == 0.18215


def test_an_sdxl_refiner_file_registers_and_refines_with_its_config(tmp_path, capsys):
    checkpoint = write_mini_refiner(tmp_path / "refiner.safetensors")

    assert main(["--data-dir", str(tmp_path), "models", "add", str(checkpoint)]) == 0  # loads, too

    air = next(word for word in capsys.readouterr().out.split() if word.startswith("local:"))
    entry = Catalog(Database(tmp_path / "kiln.sqlite3")).get(air)
    assert (entry.architecture, entry.type, entry.defaults.width) == ("sdxl", "refiner", 1024)
    refiner = StableDiffusionXLImg2ImgPipeline.from_single_file(
        entry.path, config=entry.config_path, local_files_only=True)
    assert refiner.text_encoder is None and refiner.config.requires_aesthetics_score
    images = refiner("a photo of a cat", image=Image.new("RGB", (64, 64), "gray"), strength=0.5,
                     num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 64, 64, 3)
