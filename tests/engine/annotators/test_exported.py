"""lineart_anime annotator: tiny programs with the Anime2Sketch generator's input and output
contract, exported and saved as an operator's export is (`torch.export`, height and width dynamic
multiples of 256), loaded and run through `annotate`; the controlnet_aux pre- and post-processing
(scaling to [-1, 1], back to 0-255, inverted) and the cap on the detection size."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kiln.engine.annotators import annotate, exported
from kiln.errors import ModelLoadError


def _export(module: torch.nn.Module, path: Path) -> str:
    """`module` exported and saved as the module docstring's command does it: one 1x3xHxW input,
    H and W multiples of 256 from 512 to 4096."""
    side = {
        2: 256 * torch.export.Dim("height", min=2, max=16),
        3: 256 * torch.export.Dim("width", min=2, max=16),
    }
    program = torch.export.export(
        module.eval(), (torch.zeros(1, 3, 512, 512),), dynamic_shapes=(side,)
    )
    torch.export.save(program, str(path))
    return str(path)


def _check_generator_input(image: torch.Tensor) -> None:
    """Fail the program's run unless `image` is what the Anime2Sketch generator takes: the export
    refuses any shape but 1x3xHxW with H and W from 512 to 4096; these checks, kept in the
    exported program, refuse sides that are not multiples of 256 and values outside [-1, 1]."""
    torch._check(image.shape[2] % 256 == 0)
    torch._check(image.shape[3] % 256 == 0)
    torch._assert_async(((image >= -1) & (image <= 1)).all(), "expected values in [-1, 1]")


class _TinyAnimeLineArt(torch.nn.Module):
    """The generator's contract at toy size: a strided conv down, a transposed conv up, tanh."""

    def __init__(self) -> None:
        super().__init__()
        self.down = torch.nn.Conv2d(3, 4, kernel_size=4, stride=2, padding=1)
        self.up = torch.nn.ConvTranspose2d(4, 1, kernel_size=4, stride=2, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        _check_generator_input(image)
        features = torch.nn.functional.leaky_relu(self.down(image), 0.2)
        return torch.tanh(self.up(features))


class _RedChannel(torch.nn.Module):
    """Line art that is the input's red channel, so the output's mapping can be read exactly."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        _check_generator_input(image)
        return image[:, :1]


class _ThreeChannels(torch.nn.Module):
    """A module that breaks the output contract: it returns its whole input."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image


def tiny_anime_line_art_model(directory: Path) -> str:
    """Write a tiny random-weight exported program with the Anime2Sketch generator's contract
    (1x3xHxW RGB in [-1, 1], H and W multiples of 256 from 512 → 1x1xHxW in [-1, 1]; it raises on
    any other input) to `directory`/lineart_anime.pt2 and return its path."""
    torch.manual_seed(0)
    return _export(_TinyAnimeLineArt(), directory / "lineart_anime.pt2")


@pytest.fixture(scope="module")
def line_art_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_anime_line_art_model(tmp_path_factory.mktemp("lineart-anime"))


def _photo(width: int = 80, height: int = 48) -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("shape", "value"),
    [((1, 3, 512, 768), 2.0), ((1, 3, 512, 769), 0.0), ((1, 3, 256, 512), 0.0), ((1, 4, 512, 512), 0.0)],
    ids=["out-of-range", "not-a-multiple-of-256", "under-512", "four-channels"],
)
def test_tiny_model_refuses_what_the_generator_cannot_take(
    line_art_model: str, shape: tuple[int, ...], value: float
) -> None:
    program = torch.export.load(line_art_model).module()
    assert tuple(program(torch.zeros(1, 3, 512, 768)).shape) == (1, 1, 512, 768)
    with pytest.raises((AssertionError, RuntimeError)):
        program(torch.full(shape, value))


def test_line_art_is_grayscale_at_the_input_size(line_art_model: str) -> None:
    guide = annotate("lineart_anime", line_art_model, _photo(80, 48).convert("RGBA"), device="cpu")
    assert (guide.mode, guide.size) == ("L", (80, 48))


def test_same_image_gives_same_bytes(line_art_model: str) -> None:
    first = annotate("lineart_anime", line_art_model, _photo(), device="cpu")
    second = annotate("lineart_anime", line_art_model, _photo(), device="cpu")
    assert first.tobytes() == second.tobytes()


def test_line_art_is_the_generator_output_in_0_255_inverted(tmp_path: Path) -> None:
    # Left half red 200, right half red 40, noise in green and blue: the generator's output is the
    # red channel in [-1, 1], so away from the seam the guide is 255 - 200 and 255 - 40.
    pixels = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    pixels[:, :32, 0], pixels[:, 32:, 0] = 200, 40
    model = _export(_RedChannel(), tmp_path / "red.pt2")
    guide = np.asarray(annotate("lineart_anime", model, Image.fromarray(pixels), device="cpu"))
    assert guide.shape == (48, 64)
    assert np.all(guide[:, :24] == 55) and np.all(guide[:, 40:] == 215)


@pytest.mark.parametrize(
    ("height", "width", "generator_size"),
    [(48, 80, (512, 1024)), (1500, 1000, (768, 512)), (3, 4000, (512, 2048)), (4000, 3, (2048, 512))],
    ids=["short-side-to-512", "already-512", "thin-wide", "thin-tall"],
)
def test_generator_sees_short_side_512_long_side_at_most_2048(
    height: int, width: int, generator_size: tuple[int, int]
) -> None:
    # 3x4000 with its short side scaled to 512 would be 682,667 pixels long: the long side's cap
    # scales it to 2048 instead, and the short side goes up to the generator's 512 at least.
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    assert exported._generator_input(rgb).shape == (*generator_size, 3)


@pytest.mark.parametrize("size", [(3, 4000), (4000, 3)], ids=["wide", "tall"])
def test_thin_image_gives_line_art_of_its_size_quickly(
    line_art_model: str, size: tuple[int, int]
) -> None:
    started = time.monotonic()
    guide = annotate("lineart_anime", line_art_model, _photo(*size), device="cpu")
    assert (guide.mode, guide.size) == ("L", size)
    assert time.monotonic() - started < 5


def test_program_with_another_output_is_refused(tmp_path: Path) -> None:
    model = _export(_ThreeChannels(), tmp_path / "three-channels.pt2")
    with pytest.raises(ModelLoadError, match="1x1x512x512"):
        annotate("lineart_anime", model, _photo(), device="cpu")


def test_state_dict_is_not_an_exported_program(tmp_path: Path) -> None:
    # What registering controlnet_aux's netG.pth itself, instead of its export, looks like.
    path = tmp_path / "netG.pth"
    torch.save(_TinyAnimeLineArt().state_dict(), path)
    with pytest.raises(ModelLoadError, match="lineart_anime"):
        annotate("lineart_anime", str(path), _photo(), device="cpu")
