"""The local-learning cost table (benchmarks/tables/local_cost.py) from hand-made run records."""

import pytest

from benchmarks.tables.local_cost import algorithm_label, local_cost_rows, network_label

MB = 1e6


def run(algorithm, tag, hparams=None, arch="resnet", arch_args=None, peak=None, rss=None, epoch=None, measure=None):
    cfg = {"algorithm": algorithm, "tag": tag, "dataset": "cifar10-jpeg", "arch": arch,
           "arch_args": arch_args or {"depth": 8, "width": 16}, "hparams": {"lr": 0.001, **(hparams or {})},
           "batch_size": 64, "measure": measure or (["memory"] if peak is not None else ["time"]),
           "train_limit": 256, "epochs": 2}
    m = {}
    epochs = []
    if peak is not None:  # epoch 2's RSS holds what evaluation left in the heap: not the figure shown
        m["cpu_memory"] = {"baseline_rss_bytes": 1000 * MB,
                           "peak": {"peak_bytes": peak * MB, "rss_peak_bytes": (1000 + 5 * rss) * MB}}
        epochs = [{"cpu_rss_peak_bytes": (1000 + rss) * MB}, {"cpu_rss_peak_bytes": (1000 + 5 * rss) * MB}]
    if epoch is not None:
        m["epoch_time_mean_s"] = epoch
    return {"config": cfg, "summary": {"status": "completed", "measurements": m}, "epochs": epochs,
            "environment": {"cpu_model": "cpu"}}


def test_rows_pair_memory_with_the_epoch_times_of_the_same_settings_and_divide_by_bp():
    memory = [run("bp", "local_cost", peak=100, rss=300), run("sff", "local_cost", {"granularity": "layer"}, peak=40, rss=150),
              run("sff", "local_cost", {"granularity": "block"}, peak=60, rss=210)]
    timed = [run("bp", "sff", epoch=2.0), run("bp", "sff", epoch=4.0),  # two runs: their mean
             run("sff", "sff", {"granularity": "layer"}, epoch=6.0),
             run("sff", "sff", {"granularity": "layer", "lr": 0.01}, epoch=99.0),  # other settings: not paired
             run("sff", "sff", {"granularity": "block"}, epoch=30.0, measure=["time", "memory"])]  # hooked: not a time
    rows, md = local_cost_rows(memory, "quick profile", timed)
    by = {r["algorithm"]: r for r in rows}
    assert [r["algorithm"] for r in rows] == ["BP", "SFF", "SFF hybrid"]
    assert by["BP"]["epoch_s"] == pytest.approx(3.0) and by["BP"]["epoch_n"] == 2
    assert by["SFF"]["epoch_s"] == pytest.approx(6.0) and by["SFF"]["epoch_vs_bp"] == pytest.approx(2.0)
    assert by["SFF"]["peak_vs_bp"] == pytest.approx(0.4) and by["SFF"]["rss_vs_bp"] == pytest.approx(0.5)
    assert by["SFF hybrid"]["epoch_s"] is None and by["SFF hybrid"]["epoch_vs_bp"] is None
    assert by["SFF hybrid"]["rss_mb"] == pytest.approx(210)
    assert by["SFF"]["epoch_runs"] == "training subset of 256, 2 epochs" and by["SFF"]["memory_runs"] == "quick profile"
    assert "| resnet-8, width 16 | cifar10-jpeg | SFF | 64 | 6.00 | 2.00 | 40.0 | 0.40 | 150.0 | 0.50 |" in md


def test_a_network_without_bp_has_no_ratios_and_no_runs_say_how_to_make_them():
    rows, _ = local_cost_rows([run("fg", "local_cost", {"perturb": "weights"}, arch="mlp",
                                   arch_args={"widths": [1000, 1000]}, peak=10, rss=20)], "quick", [])
    assert rows[0]["algorithm"] == "FG-W" and rows[0]["network"] == "mlp 2x1000" and rows[0]["peak_vs_bp"] is None
    assert "make reproduce-local-cost" in local_cost_rows([], "no runs", [])[1]


def test_labels():
    assert algorithm_label({"algorithm": "fg", "hparams": {"perturb": "activities"}}) == "FG-A"
    assert algorithm_label({"algorithm": "mf"}) == "MF"
    assert network_label({"arch": "cnn", "arch_args": {"channels": [64, 128]}}) == "cnn 64-128"
    assert network_label({"arch": "mobilenetv3", "arch_args": {"width": 0.25}}) == "mobilenetv3-small, width 0.25"
    assert network_label({"arch": "localmixer", "arch_args": {"patches": 4, "channels": 256}}) == "localmixer"
