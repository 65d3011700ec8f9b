"""Run numerics: denormals flushed on the CPU (process-wide), bf16 autocast as part of a run's identity,
fused Adam the same update as torch's default."""

import json

import pytest
import torch

from algorithms import ALGORITHMS
from benchmarks.run.config import ExperimentConfig
from benchmarks.common.numerics import autocast, run_numerics
from benchmarks.run.runner import run_experiment

TINY = 1e-40  # a float32 denormal (the smallest normal float32 is about 1.2e-38)


def test_denormals_are_flushed_for_the_whole_process_and_in_a_run():
    import benchmarks.common.numerics  # noqa: F401  (imported: flushing is on)

    assert (torch.tensor([TINY]) * 1.0).item() == 0.0
    with run_numerics("cpu") as info:
        assert info["flush_denormal"] is True
        assert (torch.tensor([TINY]) * 1.0).item() == 0.0
    # the pool's threads flush too, whenever they were started: a multi-threaded op on denormals gives zeros
    big = torch.full((4_000_000,), TINY)
    assert (big * 1.0).abs().max().item() == 0.0


def test_autocast_bf16_makes_matrix_products_bfloat16_and_fp32_changes_nothing():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast("cpu", "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with autocast("cpu", "fp32"):
        assert (a @ b).dtype == torch.float32
    with pytest.raises(ValueError):
        autocast("cpu", "fp8")


def test_bf16_run_is_another_run_and_says_how_it_was_computed(tmp_path):
    base = dict(algorithm="mf", dataset="digits", arch_args={"widths": [64]}, epochs=2, quiet=True,
                results_dir=str(tmp_path))
    fp32 = run_experiment(ExperimentConfig(**base))
    bf16 = run_experiment(ExperimentConfig(**base, precision="bf16"))
    assert fp32.run_dir != bf16.run_dir and not bf16.reused
    env = json.loads((bf16.run_dir / "environment.json").read_text())
    assert env["precision"] == "bf16" and env["flush_denormal"] is True
    assert bf16.summary["status"] == "completed" and bf16.summary["test_acc"] > 50  # it still learns


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_fused_adam_gives_the_same_update_as_the_default(optimizer):
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    trainers = []
    for fused in (True, False):
        torch.manual_seed(0)
        t = ALGORITHMS.get("bp")((6,), 3, "mlp", {"widths": [5]}, {"optimizer": optimizer, "fused": fused,
                                                                   "weight_decay": 0.01})
        for _ in range(3):
            t.update(x, y)
        trainers.append(t)
    assert trainers[0].optimizer.defaults["fused"] is True and not trainers[1].optimizer.defaults["fused"]
    for (name, p), q in zip(trainers[0].named_parameters(), trainers[1].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
