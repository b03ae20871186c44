"""The demo models a fresh machine gets from `kiln models init`, registered without downloads.

`kiln:shapes@1` and `kiln:shapes-inpaint@1` were trained by `make demo-model` (see kiln.demo) and
ship as fp16 folders in this package: they draw coloured shapes as asked. The `tiny-*` models are
random weights built here on first use (by `kiln.engine.demo_models`, and for FLUX and SD3
`kiln.engine.demo_flow_models`, for IP-Adapters `kiln.engine.demo_ip_adapters`): they draw noise and exist so that every architecture's code
path runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kiln.models.catalog import Catalog, CatalogEntry, ModelDefaults

BUILD_VERSION = "1"  # bump when a builder changes, so `init` rebuilds existing folders
TRAINED_DIR = Path(__file__).parent / "trained"
"""Where the trained demo models ship; `make demo-model` rebuilds them."""


@dataclass(frozen=True)
class DemoModel:
    air: str
    folder: str
    architecture: str
    builder: str | None  # a function of kiln.engine.demo_models or demo_flow_models; None: trained
    comment: str
    defaults: ModelDefaults
    type: str | None = "base"  # the catalog's model type, e.g. "inpainting"
    category: str = "checkpoint"
    conditioning: str | None = None  # ControlNets: what their guide images show
    file: str | None = None  # registered file inside the folder (single-file LoRAs, IP-Adapters)
    encoder: str | None = None  # IP-Adapters: their image encoder's folder inside the folder


DEMO_MODELS = (
    DemoModel(
        "kiln:shapes@1", "shapes", "sd1x", None,
        "Trained here on rendered scenes: one circle, square, triangle or star in one of 8 "
        "colours on a plain background, small or large, in the centre or a corner. 128 px.",
        ModelDefaults(width=128, height=128, steps=20, cfg=7.0),
    ),
    DemoModel(
        "kiln:shapes-inpaint@1", "shapes-inpaint", "sd1x", None,
        "The inpainting variant (9-channel UNet) of kiln:shapes@1: repaints a masked region "
        "with the shape or background asked for. Inpainting and outpainting only.",
        ModelDefaults(width=128, height=128, steps=20, cfg=7.0),
        type="inpainting",
    ),
    DemoModel(
        "kiln:tiny-sd@1", "tiny-sd", "sd1x", "build_tiny_sd",
        "Random weights in the SD 1.x architecture: draws noise; for testing the code path.",
        ModelDefaults(width=128, height=128, steps=4, cfg=7.0),
    ),
    DemoModel(
        "kiln:tiny-sdxl@1", "tiny-sdxl", "sdxl", "build_tiny_sdxl",
        "Random weights in the SDXL architecture: draws noise; for testing the code path.",
        ModelDefaults(width=128, height=128, steps=4, cfg=7.0),
    ),
    DemoModel(
        "kiln:tiny-flux@1", "tiny-flux", "flux", "build_tiny_flux",
        "Random weights in the FLUX.1 dev architecture (CLIP and T5 text encoders, guidance "
        "input): draws noise; for testing the FLUX code path.",
        ModelDefaults(width=128, height=128, steps=4, cfg=3.5),
    ),
    DemoModel(
        "kiln:tiny-sd3@1", "tiny-sd3", "sd3", "build_tiny_sd3",
        "Random weights in the Stable Diffusion 3 architecture (two CLIP text encoders and T5): "
        "draws noise; for testing the SD3 code path.",
        ModelDefaults(width=128, height=128, steps=4, cfg=7.0),
    ),
    DemoModel(
        "kiln:tiny-sd-inpaint@1", "tiny-sd-inpaint", "sd1x", "build_tiny_sd_inpaint",
        "Random weights in the SD 1.x inpainting architecture (9-channel UNet): draws noise; "
        "for testing the inpainting code path.",
        ModelDefaults(width=128, height=128, steps=4, cfg=7.0),
        type="inpainting",
    ),
    DemoModel(
        "kiln:tiny-controlnet@1", "tiny-controlnet", "sd1x", "build_tiny_controlnet",
        "Random-weight canny ControlNet for kiln:tiny-sd@1: for testing the ControlNet path.",
        ModelDefaults(), type=None, category="controlnet", conditioning="canny",
    ),
    DemoModel(
        "kiln:tiny-controlnet-sdxl@1", "tiny-controlnet-sdxl", "sdxl", "build_tiny_controlnet_sdxl",
        "Random-weight canny ControlNet for kiln:tiny-sdxl@1: for testing the ControlNet path.",
        ModelDefaults(), type=None, category="controlnet", conditioning="canny",
    ),
    DemoModel(
        "kiln:tiny-lora@1", "tiny-lora", "sd1x", "build_tiny_lora",
        "Random-weight LoRA (diffusers/PEFT format) for kiln:tiny-sd@1.",
        ModelDefaults(), type=None, category="lora", file="pytorch_lora_weights.safetensors",
    ),
    DemoModel(
        "kiln:tiny-lora-kohya@1", "tiny-lora-kohya", "sd1x", "build_tiny_lora_kohya",
        "Random-weight LoRA (kohya format) for kiln:tiny-sd@1.",
        ModelDefaults(), type=None, category="lora", file="lora.safetensors",
    ),
    DemoModel(
        "kiln:tiny-ipadapter@1", "tiny-ipadapter", "sd1x", "build_tiny_ip_adapter",
        "Random-weight IP-Adapter, with its tiny CLIP image encoder, for kiln:tiny-sd@1.",
        ModelDefaults(), type=None, category="ipadapter", file="ip-adapter.safetensors", encoder="image_encoder",
    ),
    DemoModel(
        "kiln:tiny-ipadapter-plus@1", "tiny-ipadapter-plus", "sd1x", "build_tiny_ip_adapter_plus",
        "Random-weight IP-Adapter Plus (a Resampler over the image encoder's hidden states), with "
        "its tiny CLIP image encoder, for kiln:tiny-sd@1.",
        ModelDefaults(), type=None, category="ipadapter", file="ip-adapter.safetensors", encoder="image_encoder",
    ),
    DemoModel(
        "kiln:tiny-ipadapter-sdxl@1", "tiny-ipadapter-sdxl", "sdxl", "build_tiny_ip_adapter_sdxl",
        "Random-weight IP-Adapter, with its tiny CLIP image encoder, for kiln:tiny-sdxl@1.",
        ModelDefaults(), type=None, category="ipadapter", file="ip-adapter.safetensors", encoder="image_encoder",
    ),
)


def init_demo_models(catalog: Catalog, models_dir: Path, log: Callable[[str], None] = print) -> list[CatalogEntry]:
    """Register every demo model: the trained ones where they ship, the random-weight ones built
    into `models_dir` (if missing or outdated). Idempotent."""
    from kiln.engine import (  # imports torch: only the CLI and tests
        demo_flow_models,
        demo_ip_adapters,
        demo_models,
    )

    builders = {**vars(demo_models), **vars(demo_flow_models), **vars(demo_ip_adapters)}
    entries = []
    for demo in DEMO_MODELS:
        if demo.builder is None:
            folder = TRAINED_DIR / demo.folder
            if not (folder / "model_index.json").is_file():
                raise FileNotFoundError(f"{demo.air} is missing from {folder}: "
                                        "`make demo-model` trains it")
            tags: tuple[str, ...] = ("demo", "trained")
        else:
            folder = models_dir / demo.folder
            stamp = folder / ".kiln-build"
            if not (stamp.exists() and stamp.read_text() == BUILD_VERSION):
                log(f"building {demo.air} in {folder}")
                builders[demo.builder](folder)
                stamp.write_text(BUILD_VERSION)
            tags = ("demo", "random-weights")
        entries.append(catalog.add(CatalogEntry(
            air=demo.air, name=demo.folder, version=demo.air.rsplit("@", 1)[1],
            category=demo.category, type=demo.type, architecture=demo.architecture,
            path=str(folder / demo.file if demo.file else folder),
            config_path=str(folder / demo.encoder) if demo.encoder else None,
            tags=tags, comment=demo.comment,
            conditioning=demo.conditioning, defaults=demo.defaults,
        )))
    return entries
