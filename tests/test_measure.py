"""Measurements around the trainer: timing, memory (CPU and CUDA), energy, latency, and plotting.

GPU-only paths (cuda-memory, NVML) run where a CUDA device exists and are skipped, with the reason,
where not. The plotting tests use the small results fixture in tests/fixtures/measure (regenerate it
with tests/fixtures/measure/make_fixture.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from algorithms import ALGORITHMS
from benchmarks.run.config import ExperimentConfig
from benchmarks.measure.latency import latency_rows, time_calls
from benchmarks.measure import METERS, RunContext
from benchmarks.measure.energy import NOT_MEASURED, EnergyMeter, import_nvml
from benchmarks.measure.memory import MeterUnavailable, SavedTensorCounter
from benchmarks.measure.timing import EpochTimer
from benchmarks.run.runner import run_experiment

FIXTURE = Path(__file__).parent / "fixtures" / "measure" / "results"
NO_CUDA = "no CUDA device on this machine; the CUDA and NVML paths run where one exists"
BATCH, WIDTH = 256, 256


# -- timing --------------------------------------------------------------------------------------

def test_epoch_timer_leaves_the_warm_up_epoch_out_of_the_mean_and_the_total():
    timer = EpochTimer()
    timer.start_run(RunContext(trainer=None, device=torch.device("cpu"), run_dir=None, config=None))
    for epoch, seconds in enumerate([0.15, 0.01, 0.01]):  # epoch 1 is the slow warm-up
        timer.start_epoch(epoch)
        time.sleep(seconds)
        timer.end_epoch(epoch)
    summary = timer.end_run()
    assert summary["epoch_time_n"] == 2
    assert summary["epoch_time_mean_s"] < 0.08  # would be >= 0.056 only if the 0.15 s epoch were averaged in
    # train_time_s is the steady state (epochs 2 and 3); the total with the warm-up is kept beside it
    assert summary["train_time_s"] < 0.1 and summary["train_time_excludes_first_epoch"] is True
    assert summary["train_time_all_s"] >= 0.17 and summary["first_epoch_time_s"] >= 0.15


def test_latency_timer_excludes_warm_up_calls_and_takes_the_median():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.05 if len(calls) <= 2 else 0.001)  # the first two calls are slow (warm-up)

    stats = time_calls(fn, "cpu", min_run_time=0.05, warmup=2)
    assert 1 <= stats["calls"] <= len(calls) - 2 and stats["blocks"] >= 1  # the timer's own calls, after the warm-up
    # the two 50 ms warm-up calls are outside the figure: a 1 ms sleep takes well under 20 ms even on a busy machine
    assert stats["median_ms"] < 20 and stats["min_ms"] >= 1.0


def test_latency_rows_cover_table4_with_the_parameters_each_mode_uses():
    trainers = {a: ALGORITHMS.get(a)((64,), 10, "mlp", {"widths": [32, 32]}, {}) for a in ("ff", "bp", "mf")}
    x = torch.randn(20, 64)
    rows = {r["row"]: r for r in latency_rows(trainers, x[:1], x, time_single=0.01, time_batch=0.01, warmup=1)}
    assert set(rows) == {"FF", "One-pass FF", "BP", "MF (FF pred)", "MF (BP pred)"}
    mf = trainers["mf"]
    assert rows["MF (FF pred)"]["parameters"] - rows["MF (BP pred)"]["parameters"] == mf.projections[0].numel()
    assert rows["BP"]["parameters"] == sum(p.numel() for p in trainers["bp"].parameters())
    assert all(r["single"]["median_ms"] > 0 and r["batch_size"] == 20 for r in rows.values())


# -- CPU memory ----------------------------------------------------------------------------------

def saved_peak(trainer, x, y, update=None) -> int:
    """Peak bytes autograd keeps during one training step, as the cpu-memory meter counts them."""
    counter = SavedTensorCounter({p.untyped_storage().data_ptr() for p in trainer.parameters()})
    with counter.hooks():
        (update or trainer.update)(x, y)
    assert counter.live == 0, "everything saved must be released once backward has run"
    return counter.peak


def _data(features=64):
    g = torch.Generator().manual_seed(0)
    return torch.randn(BATCH, features, generator=g), torch.randint(0, 10, (BATCH,), generator=g)


def test_saved_tensor_counter_counts_a_shared_storage_once_and_releases_it():
    counter = SavedTensorCounter()
    w = torch.randn(100, 100, requires_grad=True)
    with counter.hooks():
        h = w * 2  # multiplying by a number saves no tensor
        loss = (h * h).sum()  # saves h twice (both factors): one storage
    assert counter.saved_calls >= 2
    assert counter.live == h.untyped_storage().nbytes() == 100 * 100 * 4
    loss.backward()
    assert counter.live == 0 and counter.peak == 100 * 100 * 4


def test_cpu_memory_of_bp_rises_by_one_activation_per_added_layer():
    x, y = _data()
    peaks = {}
    for depth in (2, 4, 8):
        torch.manual_seed(0)
        peaks[depth] = saved_peak(ALGORITHMS.get("bp")((64,), 10, "mlp", {"widths": [WIDTH] * depth}, {}), x, y)
    per_layer = (peaks[8] - peaks[4]) / 4
    assert peaks[2] < peaks[4] < peaks[8]
    # each hidden layer keeps its ReLU output (BATCH x WIDTH float32) for backward, the next Linear shares it
    assert per_layer == pytest.approx(BATCH * WIDTH * 4, rel=0.05)


def test_cpu_memory_of_mf_is_below_bp_and_does_not_grow_with_depth():
    x, y = _data()
    bp = saved_peak(ALGORITHMS.get("bp")((64,), 10, "mlp", {"widths": [WIDTH] * 8}, {}), x, y)
    mf = {depth: saved_peak(ALGORITHMS.get("mf")((64,), 10, "mlp", {"widths": [WIDTH] * depth}, {}), x, y)
          for depth in (2, 8)}
    assert mf[8] < bp / 3
    assert mf[8] == mf[2]  # one block's activations at a time, whatever the depth


def test_memory_meter_samples_every_phase_of_mf_sequential_and_writes_timelines(results_dir):
    cfg = ExperimentConfig(algorithm="mf", dataset="digits", arch_args={"widths": [64, 64]}, epochs=2,
                           hparams={"schedule": "sequential"}, measure=["memory"], results_dir=results_dir, quiet=True)
    result = run_experiment(cfg)
    mem = result.summary["measurements"]["cpu_memory"]
    assert set(mem["peak_by_phase"]) == {"layer1", "layer2"}
    assert all(p["saved_peak_bytes"] > 0 and p["state_bytes"] > 0 for p in mem["peak_by_phase"].values())
    rows = [json.loads(line) for line in (result.run_dir / "memory_cpu.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in rows} == {"layer1", "layer2"} and all(r["saved_live_bytes"] == 0 for r in rows)
    assert (result.run_dir / "memory_cpu_trace.jsonl").stat().st_size > 0
    measurement = json.loads((result.run_dir / "measurement.json").read_text())
    assert "saved_tensors_hooks" in measurement["cpu-memory"]


# -- CUDA memory and NVML ------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA; the CUDA run is tested below")
def test_cuda_memory_says_not_available_here_without_cuda():
    meter = METERS.get("cuda-memory")()
    with pytest.raises(MeterUnavailable, match="not available here"):
        meter.start_run(RunContext(trainer=None, device=torch.device("cpu"), run_dir=None, config=None))


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_cuda_memory_records_peaks_per_phase(results_dir):
    cfg = ExperimentConfig(algorithm="mf", dataset="digits", arch_args={"widths": [64, 64]}, epochs=2, device="cuda",
                           hparams={"schedule": "sequential"}, measure=["memory"], results_dir=results_dir, quiet=True)
    mem = run_experiment(cfg).summary["measurements"]["cuda_memory"]
    assert set(mem["peak_by_phase"]) == {"layer1", "layer2"}
    assert all(p["step_peak_allocated_bytes"] > 0 for p in mem["peak_by_phase"].values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_nvml_energy_is_measured_on_a_gpu(tmp_path):
    ctx = RunContext(trainer=None, device=torch.device("cuda"), run_dir=tmp_path, config=None)
    meter = EnergyMeter(use_codecarbon=False)
    meter.start_run(ctx)
    meter.start_epoch(0)
    a = torch.randn(4096, 4096, device="cuda")
    for _ in range(50):
        a = a @ a / 64
    meter.end_epoch(0)
    energy = meter.end_run()["energy"]
    assert energy["source"].startswith("nvml") and energy["energy_j"] > 0


# -- energy --------------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU, so NVML may measure")
def test_energy_without_any_source_is_recorded_as_not_measured(tmp_path):
    meter = EnergyMeter(use_codecarbon=False)
    meter.start_run(RunContext(trainer=None, device=torch.device("cpu"), run_dir=tmp_path, config=None))
    meter.start_epoch(0)
    assert meter.end_epoch(0) == {}
    energy = meter.end_run()["energy"]
    assert energy["energy_j"] is None and energy["source"] == NOT_MEASURED
    assert "not on an NVIDIA GPU" in energy["reason"]


def test_codecarbon_energy_is_recorded_with_its_method(tmp_path):
    pytest.importorskip("codecarbon", reason="codecarbon is not installed (optional dependency 'energy')")
    meter = EnergyMeter(use_nvml=False)
    meter.start_run(RunContext(trainer=None, device=torch.device("cpu"), run_dir=tmp_path, config=None))
    started = time.perf_counter()
    epochs = []
    for epoch in (1, 2):
        last_task = time.perf_counter()
        meter.start_epoch(epoch)
        sum(i * i for i in range(300000))  # the "training steps"
        epochs.append(meter.end_epoch(epoch)["codecarbon_train_energy_j"])
        sum(i * i for i in range(300000))  # the "evaluation": outside the tasks
    ended = time.perf_counter()
    energy = meter.end_run()["energy"]
    if energy["source"] == NOT_MEASURED:
        pytest.skip(f"CodeCarbon could not measure here: {energy['reason']}")
    cc = energy["codecarbon"]
    # training alone: the tasks of the epochs after the first; the whole run, evaluation included, is more
    assert energy["source"] == "codecarbon, training steps after epoch 1", energy.get("reason")
    assert energy["energy_j"] == cc["train_steps_energy_j"] == epochs[1] > 0
    assert cc["train_steps_energy_all_j"] == pytest.approx(sum(epochs)) and cc["first_epoch_energy_j"] == epochs[0]
    assert cc["energy_j"] > cc["train_steps_energy_all_j"] and cc["train_steps_error"] is None
    # the whole run's duration, on our clock: CodeCarbon's own restarts with each task
    assert cc["duration_s"] >= ended - started > ended - last_task
    rapl = Path("/sys/class/powercap/intel-rapl").exists()
    assert cc["method"]["cpu"].startswith("measured" if rapl else "estimated")
    assert energy["estimate"] is True or rapl
    assert cc["settings"]["tracking_mode"] == "process" and cc["settings"]["country_iso_code"]
    assert (tmp_path / "codecarbon.csv").exists()


def test_the_deprecated_pynvml_package_is_refused(monkeypatch):
    import importlib.metadata
    monkeypatch.setattr(importlib.metadata, "packages_distributions", lambda: {"pynvml": ["pynvml"]})
    with pytest.raises(RuntimeError, match="deprecated"):
        import_nvml()


# -- plotting from the results fixture -----------------------------------------------------------

def test_plots_from_the_fixture_write_every_figure_and_table(tmp_path):
    from bpfree.plots import main

    assert main(["--results", str(FIXTURE), "--out", str(tmp_path)]) == 0
    for name in ("fig1", "fig2", "fig3", "fig4", "fig5"):
        for ext in ("png", "pdf"):
            path = tmp_path / "figures" / f"{name}.{ext}"
            assert path.exists() and path.stat().st_size > 1000, path
    for name in ("table4", "table5", "fig3_slopes"):
        assert (tmp_path / "tables" / f"{name}.md").exists() and (tmp_path / "tables" / f"{name}.csv").exists()
    table5 = (tmp_path / "tables" / "table5.md").read_text()
    assert "full batch" in table5 and "mini-batch 64" in table5
    table4 = (tmp_path / "tables" / "table4.md").read_text()
    assert all(row in table4 for row in ("| FF |", "| One-pass FF |", "| BP |", "| MF (FF pred) |", "| MF (BP pred) |"))


def test_table5_never_averages_seeds_timed_on_different_machines():
    from benchmarks.tables.cost import table5_rows

    def run(alg, seed, cpu, epoch_s):
        return {"config": {"tag": "table5", "algorithm": alg, "dataset": "mnist", "arch": "mlp", "seed": seed,
                           "batch_size": 64, "epochs": 10, "arch_args": {"widths": [1000, 1000]}},
                "environment": {"cpu_model": cpu, "device": "cpu"},
                "measurement": {"data": {"train": 60000}},
                "summary": {"status": "completed", "measurements": {"epoch_time_mean_s": epoch_s}}}

    runs = [run("bp", 0, "Xeon", 5.0), run("mf", 0, "Xeon", 4.0),
            run("bp", 1, "EPYC", 9.0), run("mf", 1, "EPYC", 3.0), run("bp", 2, "EPYC", 11.0), run("mf", 2, "EPYC", 3.0)]
    rows, md = table5_rows(runs)
    by_device = {r["device"]: r for r in rows}
    assert set(by_device) == {"Xeon", "EPYC"}
    assert by_device["Xeon"]["bp_s"] == 5.0 and by_device["Xeon"]["bp_n"] == 1
    assert by_device["EPYC"]["bp_s"] == 10.0 and by_device["EPYC"]["bp_n"] == 2
    assert by_device["EPYC"]["ratio_bp_over_mf"] == pytest.approx(10.0 / 3.0)
    assert md.count("**Table 5:") == 2 and "on EPYC" in md and "on Xeon" in md


def test_fitted_slope_and_figure3_data():
    from benchmarks.tables.figures import depth_data, fit_slope

    assert fit_slope([1, 2, 3], [10.0, 14.0, 18.0]) == pytest.approx((4.0, 6.0))
    assert fit_slope([2, 2], [1.0, 2.0]) is None
    runs = [{"config": {"arch": "mlp", "algorithm": "bp", "arch_args": {"widths": [1000] * d}},
             "summary": {"measurements": {"cpu_memory": {"peak": {"peak_bytes": (5 + 20 * d) * 1e6}}}}}
            for d in (1, 2, 4)]
    data = depth_data(runs)
    assert data["algorithms"]["bp"]["slope_mb_per_layer"] == pytest.approx(20.0)


def test_plots_on_a_missing_results_folder_fail_with_one_line(tmp_path, capsys):
    from bpfree.plots import main

    assert main(["--results", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err


def test_a_run_is_named_by_the_device_it_ran_on():
    from benchmarks.run.environment import machine_of

    env = {"cpu_model": "EPYC", "cpu_threads": 2, "gpu_model": "NVIDIA H200"}
    assert machine_of({"environment": dict(env, device="cuda:0")}) == "NVIDIA H200"
    assert machine_of({"environment": dict(env, device="cpu")}) == "EPYC"  # a CPU run on a GPU machine
    assert machine_of({"environment": dict(env, device="cpu")}, with_threads=True) == "EPYC (2 threads)"
