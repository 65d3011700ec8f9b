"""bench-speed's CNN references: the plain loops make the suite's updates, the floor counts the right
kernels, and the command refuses FF on a CNN and writes its rows end to end (all on tiny shapes)."""

import json

import pytest
import torch

from algorithms import ALGORITHMS
from benchmarks.common.numerics import autocast
from benchmarks.measure.speed import cpu_bf16_support
from benchmarks.measure.speed_cnn import (CNN_ALGORITHMS, PlainCNN, cnn_parameter_count, cnn_step_gemms,
                                          feature_shapes, step_convs)
from bpfree import cli

SHAPE, CHANNELS, CLASSES = (1, 8, 8), [4, 8, 6], 10


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny kernels: on two busy cores a second thread only makes each one wait for the other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pair(algorithm, channels_last=False):
    """A suite trainer and a plain loop holding the same weights (and FA/DFA feedback)."""
    torch.manual_seed(0)
    trainer = ALGORITHMS.get(algorithm)(SHAPE, CLASSES, "cnn", {"channels": CHANNELS}, {"fused": True})
    plain = PlainCNN(algorithm, SHAPE, CHANNELS, CLASSES, "cpu", channels_last=channels_last)
    with torch.no_grad():
        for i, conv in enumerate(plain.convs):
            src = trainer.net.blocks[i][0]
            conv.weight.copy_(src.weight)
            conv.bias.copy_(src.bias)
            if algorithm == "fa":
                plain.feedback[i].copy_(src.feedback)
        if algorithm == "mf":
            for m, src in zip(plain.projections, trainer.projections):
                m.copy_(src)
        else:
            plain.head.weight.copy_(trainer.net.head[1].weight)
            plain.head.bias.copy_(trainer.net.head[1].bias)
        if algorithm == "fa":
            plain.feedback[-1].copy_(trainer.net.head[1].feedback)
        if algorithm == "dfa":
            for i, b in enumerate(plain.feedback):
                b.copy_(trainer.feedback(i))
    return trainer, plain


def _suite_params(trainer, algorithm):
    params = [p for block in trainer.net.blocks for p in block.parameters()]
    return params + (list(trainer.projections) if algorithm == "mf" else list(trainer.net.head.parameters()))


@pytest.mark.parametrize("algorithm,precision", [(a, "fp32") for a in CNN_ALGORITHMS] +
                         [(a, "bf16") for a in ("bp", "mf", "dfa")])
def test_plain_cnn_makes_the_suites_update(algorithm, precision):
    trainer, plain = _pair(algorithm)
    before = [p.detach().clone() for p in plain.parameters()]
    g = torch.Generator().manual_seed(1)
    for _ in range(2):  # the second step reads Adam's state from the first
        x, y = torch.randn(16, *SHAPE, generator=g), torch.randint(0, CLASSES, (16,), generator=g)
        with autocast("cpu", precision):
            trainer.update(x, y)
            plain(x, y)
    suite = _suite_params(trainer, algorithm)
    assert len(suite) == len(plain.parameters())
    for s, p, b in zip(suite, plain.parameters(), before):
        assert s.shape == p.shape
        torch.testing.assert_close(p, s, atol=1e-6, rtol=1e-5)
        assert not torch.equal(p, b)  # every parameter learned: a step that did nothing cannot pass


@pytest.mark.parametrize("algorithm", CNN_ALGORITHMS)
def test_channels_last_plain_loop_makes_the_same_update(algorithm):
    _, contiguous = _pair(algorithm)
    _, nhwc = _pair(algorithm, channels_last=True)
    assert nhwc.convs[1].weight.is_contiguous(memory_format=torch.channels_last)
    x, y = torch.randn(16, *SHAPE), torch.randint(0, CLASSES, (16,))
    contiguous(x, y)
    nhwc(x.contiguous(memory_format=torch.channels_last), y)
    for a, b in zip(contiguous.parameters(), nhwc.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_floor_convolutions():
    n = len(CHANNELS)
    for algorithm in CNN_ALGORITHMS:
        ops = step_convs(algorithm, 64, SHAPE, CHANNELS)
        for kind in ("forward", "weight_grad"):
            assert sorted(op.layer for op in ops if op.kind == kind) == list(range(n))
        input_grads = sorted(op.layer for op in ops if op.kind == "input_grad")
        # BP and FA send the error down through every conv but the first; DFA and MF detach block inputs
        assert input_grads == (list(range(1, n)) if algorithm in ("bp", "fa") else [])
    sides = [(op.c_in, op.c_out, op.height) for op in step_convs("bp", 64, SHAPE, CHANNELS) if op.kind == "forward"]
    assert sides == [(1, 4, 8), (4, 8, 4), (8, 6, 2)]  # each block pools by 2


@pytest.mark.parametrize("algorithm", CNN_ALGORITHMS)
def test_floor_sizes_match_the_suite(algorithm):
    trainer = ALGORITHMS.get(algorithm)(SHAPE, CLASSES, "cnn", {"channels": CHANNELS}, {})
    assert feature_shapes(SHAPE, CHANNELS) == list(trainer.net.feature_shapes)
    assert cnn_parameter_count(algorithm, SHAPE, CHANNELS, CLASSES) == sum(p.numel() for p in trainer.parameters())
    gemms = cnn_step_gemms(algorithm, 32, SHAPE, CHANNELS, CLASSES)
    if algorithm == "mf":
        assert gemms[::3] == [(32, m.shape[1], CLASSES) for m in trainer.projections]
    if algorithm == "dfa":
        assert gemms[2:] == [(32, CLASSES, trainer.feedback(i).shape[0]) for i in range(len(CHANNELS))]


def test_cpu_bf16_support(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile\n\n"
                    "processor\t: 1\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile\n")
    found = cpu_bf16_support(info)
    assert (found["avx512_bf16"], found["amx_bf16"], found["amx_tile"]) == (True, False, True)
    missing = cpu_bf16_support(tmp_path / "none")
    assert missing["avx512_bf16"] is None and missing["amx_bf16"] is None


def test_ff_is_refused_on_a_cnn(capsys):
    assert cli.main(["bench-speed", "--arch", "cnn", "--algorithms", "ff"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ff has no cnn path")


def test_cnn_rows_end_to_end(tmp_path, capsys):
    out = tmp_path / "speed.json"
    rc = cli.main(["bench-speed", "--arch", "cnn", "--channels", "4,8", "--dataset", "digits", "--train-limit", "256",
                   "--repeats", "1", "--batch-sizes", "64", "--algorithms", "bp,mf", "--precision", "bf16",
                   "--eval-limit", "100", "--floor-min-time", "0.002", "--threads", "1", "--out", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["arch"] == "cnn" and data["arch_args"]["channels"] == [4, 8] and data["input_shape"] == [1, 8, 8]
    assert data["variants"] == ["fp32", "bf16"]
    assert {"avx512_bf16", "amx_bf16", "amx_tile"} <= set(data["cpu_bf16"])
    for name in ("bp", "mf"):
        row = data["results"]["b64"][name]
        assert row["steps"] == 4 and row["median_s"]["suite"] > 0 and row["median_s"]["plain"] > 0
        assert row["floor_step"]["conv_s"] > 0 and row["floor_step"]["adam_s"] > 0
        assert row["eval"]["images"] == 100 and row["eval"]["eval/epoch"] > 0
        assert row["variants"]["bf16"]["median_s"]["suite"] > 0
    assert len(data["results"]["b64"]["mf"]["eval"]["modes"]) == 4  # ff, bp, layer1, layer2: one pass
    inputs = {c["op"] for c in data["results"]["b64"]["bp"]["floor_step"]["convs"]}
    assert inputs == {"conv1 forward", "conv1 weight_grad", "conv2 forward", "conv2 weight_grad", "conv2 input_grad"}
    assert "mf/bp" in data["results"]["b64"]
