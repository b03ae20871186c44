"""`kiln.engine.annotators.annotate`: one runner for each preprocessor that needs a model."""

from __future__ import annotations

from kiln.engine.annotators import _RUNNERS
from kiln.preprocess import ANNOTATED


def test_every_annotated_preprocessor_has_a_runner():
    assert set(_RUNNERS) == set(ANNOTATED)
