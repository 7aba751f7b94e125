"""Fixtures of the integration tests: PyTorch runs single-threaded (the models are tiny; a busy
machine makes OpenMP barriers cost milliseconds per operation)."""

from __future__ import annotations

import importlib.util

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread():
    if importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
