"""Fixtures shared by the model tests: tiny random encoders of both families, one intra-op thread."""

from __future__ import annotations

import pytest
import torch

from samdg.models.backbones import build_sam

TINY_VARIANTS = ["tiny_vit_test", "tiny_tinyvit_test"]


@pytest.fixture(autouse=True)
def one_thread():
    """These tiny models are dominated by per-op overhead; with two intra-op threads on a busy two-core machine
    every op waits for a descheduled thread (measured: 20x slower steps). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=TINY_VARIANTS)
def encoder(request):
    """The image encoder of each tiny test variant, randomly initialised with seed 0."""
    torch.manual_seed(0)
    return build_sam(request.param).image_encoder


@pytest.fixture
def make_images():
    """``make_images(encoder, batch=2, seed=1)``: random inputs (B,3,S,S) in [0,1] at the encoder's input size."""

    def make(encoder, batch: int = 2, seed: int = 1) -> torch.Tensor:
        size = encoder.config.input_size
        return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))

    return make
