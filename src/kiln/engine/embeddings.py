"""Textual-inversion embeddings: loaded once into a resident pipeline, used by the requests that
list them.

diffusers' `load_textual_inversion` adds tokens to a tokenizer and rows to its text encoder's
embedding matrix: it changes the resident pipeline that every request shares. So each embedding
(at each weight) gets tokens of its own, `<kiln_ti_N_i>`, one per vector, which no prompt
contains: only a request that lists the embedding has its trigger word replaced by them
(`expand_triggers`). A prompt without them tokenizes and encodes exactly as before the
embedding was loaded, so the tokens can stay loaded between requests.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline

from kiln.errors import ModelLoadError
from kiln.generation import EmbeddingInput, PromptWeighting, trigger_pattern

from .residency import Lease, Residency, file_bytes

ENCODERS = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))
"""A pipeline's (tokenizer, text encoder) attribute pairs; an SDXL refiner has the second only."""
_DIFFUSERS_FILES = ("learned_embeds.safetensors", "learned_embeds.bin")


@dataclass(frozen=True)
class LoadedEmbedding:
    """An embedding's tokens in one pipeline (the same in each of its tokenizers), and the
    bytes of the embedding rows they added."""

    tokens: tuple[str, ...]
    size: int


class TextualInversions:
    """The embeddings loaded into the resident pipelines.

    Each is an entry of `residency` under `(pipeline key, AIR, path, weight)`, a child of its
    pipeline's, sized by the rows it added: evicting it removes its tokens and rows from the
    pipeline, evicting the pipeline drops its embeddings with it. Calls must be serialised
    (the engine's worker).
    """

    def __init__(self, residency: Residency) -> None:
        self._residency = residency
        self._serials = itertools.count()  # token names are never reused
        self._lock = threading.Lock()

    def activate(
        self, lease: Lease, pipe: DiffusionPipeline, pipe_key: Hashable,
        embeddings: tuple[EmbeddingInput, ...],
    ) -> dict[str, tuple[str, ...]]:
        """Load `embeddings` into `pipe` (the resident pipeline held under `pipe_key`) where not
        yet loaded, pinned by `lease`; the tokens of each, by trigger word.

        Raises ModelLoadError (parameter `embeddings`) when a file cannot be read or has no
        vectors of the width of one of the pipeline's text encoders (another architecture).
        """
        tokens: dict[str, tuple[str, ...]] = {}
        with self._lock:
            for embedding in embeddings:
                loaded = lease.get(
                    ("embedding", pipe_key, embedding.model.air, embedding.model.path, embedding.weight),
                    lambda embedding=embedding: self._load(pipe, embedding),  # type: ignore[misc]
                    size=lambda loaded: loaded.size,
                    expected_size=file_bytes(embedding.model.path),
                    parent=pipe_key,
                    on_evict=lambda loaded: _unload(pipe, loaded.tokens),
                )
                tokens[embedding.trigger] = loaded.tokens
        return tokens

    def _load(self, pipe: DiffusionPipeline, embedding: EmbeddingInput) -> LoadedEmbedding:
        model = embedding.model
        try:
            vectors = read_vectors(Path(model.path))
        except Exception as exc:  # unreadable file, unknown layout
            raise _error(embedding, f"could not be read from {model.path}: {type(exc).__name__}: {exc}") from exc
        targets = []
        for tokenizer_name, encoder_name in ENCODERS:
            encoder = getattr(pipe, encoder_name, None)
            if encoder is None:
                continue
            width = encoder.get_input_embeddings().weight.shape[1]
            found = vectors.get(encoder_name)
            if found is None or found.shape[1] != width:
                have = ", ".join(f"{name}: {len(v)} x {v.shape[1]}" for name, v in vectors.items())
                raise _error(embedding, f"has no vectors for this model's {encoder_name} ({width} wide; the "
                                        f"file has {have}): it was made for another architecture or model family")
            targets.append((getattr(pipe, tokenizer_name), encoder, found))
        counts = {len(found) for _, _, found in targets}
        if len(counts) != 1:
            raise _error(embedding, f"has {' and '.join(map(str, sorted(counts)))} vectors for this model's "
                                    "text encoders: they must have as many each")
        count = counts.pop()
        serial = next(self._serials)
        tokens = tuple(f"<kiln_ti_{serial}_{i}>" for i in range(count))
        size = 0
        for tokenizer, encoder, found in targets:
            # The rows are set below; growing the matrix first spares diffusers' resize the
            # mean-and-covariance initialisation of rows that are overwritten anyway.
            encoder.resize_token_embeddings(len(tokenizer) + count, mean_resizing=False)
            weight = encoder.get_input_embeddings().weight
            pipe.load_textual_inversion(
                (found * embedding.weight).to(device=weight.device, dtype=weight.dtype),
                token=list(tokens), tokenizer=tokenizer, text_encoder=encoder,
            )
            size += found.numel() * weight.element_size()
        return LoadedEmbedding(tokens, size)


def read_vectors(path: Path) -> dict[str, torch.Tensor]:
    """The vectors of a textual-inversion file, `(count, width)` per text encoder attribute:
    A1111's `.safetensors` (`emb_params`; SDXL `clip_l` and `clip_g`) and `.pt`
    (`string_to_param`), and diffusers' `{token: vectors}` (`learned_embeds.*`, or a folder
    holding one). Pickles are read with torch's weights-only loader."""
    if path.is_dir():
        found = next((path / name for name in _DIFFUSERS_FILES if (path / name).is_file()), None)
        if found is None:
            raise ValueError(f"the folder holds none of {', '.join(_DIFFUSERS_FILES)}")
        path = found
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Mapping[str, Any] = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if "clip_l" in state and "clip_g" in state:
        return {"text_encoder": _rows(state["clip_l"]), "text_encoder_2": _rows(state["clip_g"])}
    if "string_to_param" in state:
        return {"text_encoder": _rows(state["string_to_param"]["*"])}
    if "emb_params" in state:
        return {"text_encoder": _rows(state["emb_params"])}
    tensors = [value for value in state.values() if isinstance(value, torch.Tensor)]
    if len(tensors) == 1:  # diffusers: {token: vector(s)}
        return {"text_encoder": _rows(tensors[0])}
    raise ValueError(f"no textual-inversion layout Kiln knows (keys: {', '.join(list(state)[:6])})")


def expand_triggers(text: str, tokens: Mapping[str, tuple[str, ...]], syntax: PromptWeighting | None) -> str:
    """`text` with each trigger word replaced by its embedding's tokens. In Compel syntax the
    tokens are grouped in parentheses (weight 1), so that `trigger+` or `(trigger)1.3` weights
    all of them; A1111 syntax reads parentheses as a weight, so there they stand bare."""
    for trigger, names in tokens.items():
        joined = " ".join(names)
        replacement = f"({joined})" if syntax == "compel" else joined
        text = trigger_pattern(trigger).sub(lambda _, replacement=replacement: replacement, text)
    return text


def _rows(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach().float()
    return tensor.reshape(-1, tensor.shape[-1])


def _unload(pipe: DiffusionPipeline, tokens: tuple[str, ...]) -> None:
    for tokenizer_name, encoder_name in ENCODERS:
        tokenizer = getattr(pipe, tokenizer_name, None)
        encoder = getattr(pipe, encoder_name, None)
        if encoder is not None and tokens[0] in tokenizer.get_vocab():
            pipe.unload_textual_inversion(list(tokens), tokenizer=tokenizer, text_encoder=encoder)


def _error(embedding: EmbeddingInput, why: str) -> ModelLoadError:
    return ModelLoadError(f"embedding {embedding.model.air} {why}", parameter="embeddings",
                          air=embedding.model.air)
