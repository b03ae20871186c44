"""The categories of models the catalog holds (pure data: the protocol validates `modelSearch`
against them without importing the catalog, its database or the preprocessors)."""

from __future__ import annotations

CATEGORIES = ("checkpoint", "lora", "lycoris", "controlnet", "vae", "embeddings", "ipadapter", "annotator")
"""`annotator`: a preprocessor's model (e.g. depth estimation); its `conditioning` names the
preprocessor it serves. `ipadapter`: an IP-Adapter's weights, with the folder of its CLIP image
encoder as `config_path`."""
