"""Shared test settings: small thread count and a results folder per test."""

import pytest
import torch

torch.set_num_threads(2)  # CI machines have 2 cores; more threads only add contention


@pytest.fixture
def results_dir(tmp_path):
    return str(tmp_path / "runs")
