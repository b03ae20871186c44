"""depth: a transformers depth-estimation folder, run through `annotate`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import DPTConfig, DPTForDepthEstimation
from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

from kiln.engine.annotators import annotate
from kiln.errors import ModelLoadError


def tiny_depth_model(directory: Path) -> str:
    """A tiny random-weight DPT depth estimator with its image processor, saved in `directory`
    as Intel/dpt-hybrid-midas is: the folder to register for `depth`."""
    torch.manual_seed(0)
    config = DPTConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37,
        image_size=64, patch_size=16, backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, reassemble_factors=[4, 2, 1, 0.5],
    )
    DPTForDepthEstimation(config).save_pretrained(directory)
    DPTImageProcessorPil(size={"height": 64, "width": 64}).save_pretrained(directory)
    return str(directory)


def test_depth_map_has_the_input_size_the_full_range_and_is_deterministic(tmp_path: Path):
    path = tiny_depth_model(tmp_path)
    photo = Image.fromarray(np.random.default_rng(3).integers(0, 256, (48, 80, 3), dtype=np.uint8))
    depth = annotate("depth", path, photo, device="cpu")
    assert depth.mode == "L" and depth.size == (80, 48)
    assert np.asarray(depth).min() == 0 and np.asarray(depth).max() == 255
    assert depth.tobytes() == annotate("depth", path, photo, device="cpu").tobytes()


def test_a_folder_that_is_not_a_depth_model_is_model_unavailable(tmp_path: Path):
    with pytest.raises(ModelLoadError, match="'depth' annotator at"):
        annotate("depth", str(tmp_path), Image.new("RGB", (64, 64)), device="cpu")

