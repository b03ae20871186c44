"""softedge annotator: a random-weight DexiNed state dict saved as kornia's checkpoint is, loaded
and run through `annotate`; the network's input convention (BGR minus the training mean)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from kornia.models.dexined import DexiNed
from PIL import Image

from kiln.engine.annotators import annotate, edges
from kiln.errors import ModelLoadError


def tiny_softedge_model(directory: Path) -> str:
    """Write a random-weight DexiNed state dict (the real architecture, keys and shapes of
    `DexiNed_BIPED_10.pth`) to `directory`/dexined.pth and return its path.

    The tensors are stored in half precision, which loading casts to the network's float32: about
    70 MB instead of the 140 MB of a float32 checkpoint."""
    torch.manual_seed(0)
    state = DexiNed(pretrained=False).state_dict()
    path = directory / "dexined.pth"
    torch.save(
        {key: value.half() if value.is_floating_point() else value for key, value in state.items()},
        path,
    )
    return str(path)


@pytest.fixture(scope="module")
def softedge_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_softedge_model(tmp_path_factory.mktemp("dexined"))


def _photo(width: int = 80, height: int = 48) -> Image.Image:
    rng = np.random.default_rng(5)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_edge_map_is_grayscale_at_the_input_size(softedge_model: str) -> None:
    guide = annotate("softedge", softedge_model, _photo(80, 48).convert("RGBA"), device="cpu")
    assert (guide.mode, guide.size) == ("L", (80, 48))


def test_large_image_is_detected_smaller_and_mapped_back_to_its_size(
    softedge_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    full_size = annotate("softedge", softedge_model, _photo(80, 48), device="cpu")
    monkeypatch.setattr(edges, "DETECTION_SHORT_SIDE", 24)
    guide = annotate("softedge", softedge_model, _photo(80, 48), device="cpu")
    assert (guide.mode, guide.size) == ("L", (80, 48))
    assert guide.tobytes() != full_size.tobytes()


@pytest.mark.parametrize(
    ("width", "height", "detection_size"),
    [(80, 48, (48, 80)), (1000, 600, (512, 853)), (4000, 3, (2, 2048)), (40000, 600, (31, 2048))],
    ids=["small-as-is", "short-side-to-512", "thin-wide", "long-side-to-2048"],
)
def test_detection_size_caps_the_short_side_at_512_and_the_long_side_at_2048(
    width: int, height: int, detection_size: tuple[int, int]
) -> None:
    assert edges._detection_size(width, height) == detection_size


@pytest.mark.parametrize("size", [(3, 4000), (4000, 3)], ids=["tall", "wide"])
def test_thin_image_is_detected_with_its_long_side_capped(
    softedge_model: str, size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The short side is under 512, so only the cap on the long side scales it (to 2x2048), and the
    # map is stretched back to the image's size.
    started = time.monotonic()
    guide = annotate("softedge", softedge_model, _photo(*size), device="cpu")
    assert time.monotonic() - started < 5
    assert (guide.mode, guide.size) == ("L", size)
    monkeypatch.setattr(edges, "DETECTION_LONG_SIDE", 10**6)
    uncapped = annotate("softedge", softedge_model, _photo(*size), device="cpu")
    assert uncapped.tobytes() != guide.tobytes()


def test_same_image_gives_same_bytes(softedge_model: str) -> None:
    first = annotate("softedge", softedge_model, _photo(), device="cpu")
    second = annotate("softedge", softedge_model, _photo(), device="cpu")
    assert first.tobytes() == second.tobytes()


def _edges(network: DexiNed, network_input: np.ndarray) -> np.ndarray:
    tensor = torch.from_numpy(network_input.copy()).permute(2, 0, 1)[None]
    with torch.inference_mode():
        probabilities = torch.sigmoid(network(tensor))[0, 0]
    return (probabilities * 255).round().numpy()


def test_network_sees_bgr_minus_the_mean_it_was_trained_with(softedge_model: str) -> None:
    photo = _photo(64, 64)
    guide = np.asarray(annotate("softedge", softedge_model, photo, device="cpu")).astype(float)
    rgb = np.asarray(photo).astype(np.float32)
    # DexiNed's training input: cv2.imread's BGR, 0-255, minus the BGR mean (xavysp/DexiNed).
    bgr_mean = np.array([103.939, 116.779, 123.68], dtype=np.float32)
    network = DexiNed(pretrained=False)
    network.load_state_dict(torch.load(softedge_model, weights_only=True))
    expected = _edges(network.eval(), rgb[..., ::-1] - bgr_mean)
    assert np.abs(guide - expected).max() <= 1
    # The check tells the channel orders apart: fed RGB, the same network draws another map.
    rgb_order = _edges(network, rgb - bgr_mean)
    assert np.abs(guide - rgb_order).mean() > 5


def test_random_bytes_are_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "dexined.pth"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelLoadError, match="softedge"):
        annotate("softedge", str(path), _photo(), device="cpu")


def test_state_dict_missing_keys_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "one-layer.pth"
    torch.save({"block_1.conv1.weight": torch.zeros(32, 3, 3, 3)}, path)
    with pytest.raises(ModelLoadError, match="Missing key"):
        annotate("softedge", str(path), _photo(), device="cpu")
