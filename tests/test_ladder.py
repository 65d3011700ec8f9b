"""The ablation ladder's middle rungs, ``bp-ds`` and ``mf-joint``, against hand-computed update rules.

A tiny MLP (4 inputs, 2 hidden ReLU layers of width 3, 2 classes) with every weight set by hand, float64,
plain SGD (lr 0.1, momentum 0), so one ``update`` moves each parameter by exactly ``-lr * gradient``. The
expected gradients are written out as matrix formulas below (no autograd, no trainer code), as in
tests/test_update_rules.py. Then what tells the rungs apart: on the same weights and batch bp-ds's first
block moves differently from BP's (deep supervision adds gradient), mf-joint's first block differently
from MF's (the upper local loss reaches it without MF's detach), while mf-joint's last block and every
M_i move exactly as MF's (the local losses see the same forward pass).
"""

import pytest
import torch
import torch.nn.functional as F

from algorithms import ALGORITHMS, ConfigError
from algorithms.search_spaces import search_space

LR = 0.1
SGD = {"optimizer": "sgd", "lr": LR, "momentum": 0.0}
ATOL = 1e-6

# hand-set weights: each hidden layer has units that are on for some samples and off for others
W1 = [[0.5, -0.3, 0.2, 0.1], [-0.4, 0.6, -0.1, 0.3], [0.2, 0.2, -0.5, -0.2]]
B1 = [0.1, -0.2, 0.05]
W2 = [[0.7, -0.5, 0.3], [-0.2, 0.4, 0.6], [0.5, 0.3, -0.8]]
B2 = [-0.1, 0.05, -0.1]
W3 = [[0.6, -0.4, 0.3], [-0.5, 0.2, 0.7]]  # bp and bp-ds: the output head
B3 = [0.05, -0.05]
M1 = [[0.3, -0.6, 0.4], [-0.2, 0.5, 0.1]]  # bp-ds, mf-joint and mf: the local heads
M2 = [[-0.4, 0.3, 0.6], [0.5, -0.1, -0.3]]
WEIGHTS = {"net.blocks.0.1.weight": W1, "net.blocks.0.1.bias": B1,
           "net.blocks.1.0.weight": W2, "net.blocks.1.0.bias": B2,
           "net.head.1.weight": W3, "net.head.1.bias": B3,
           "projections.0": M1, "projections.1": M2}
X = [[1.0, 0.5, -1.0, 2.0], [-0.5, 1.5, 0.5, -1.0], [2.0, -1.0, 1.0, 0.5], [0.0, 1.0, 2.0, -0.5],
     [-1.5, -0.5, 0.5, 1.0]]
Y = [0, 1, 1, 0, 1]


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def make(name, **hp):
    """The trainer on the tiny MLP with the hand-set weights (the ones it has)."""
    torch.manual_seed(0)
    trainer = ALGORITHMS.get(name)((4,), 2, "mlp", {"widths": [3, 3]}, {**SGD, **hp}).double()
    params = dict(trainer.named_parameters())
    assert set(params) <= set(WEIGHTS), sorted(params)
    with torch.no_grad():
        for key, p in params.items():
            p.copy_(t(WEIGHTS[key]))
    return trainer


def batch():
    return t(X), torch.tensor(Y)


def snapshot(trainer):
    return {k: v.detach().clone() for k, v in trainer.named_parameters()}


def step_grads(trainer, x, y):
    """One update; the gradient each parameter was moved by, -(change)/lr."""
    before = snapshot(trainer)
    trainer.update(x, y)
    return {k: (before[k] - v.detach()) / LR for k, v in trainer.named_parameters()}


def error(logits, y):
    """d(mean cross-entropy)/d(logits): (softmax - one-hot) / N."""
    return (logits.softmax(1) - F.one_hot(y, logits.shape[1]).double()) / len(y)


def forward(x):
    a1 = x @ t(W1).T + t(B1)
    h1 = a1.relu()
    a2 = h1 @ t(W2).T + t(B2)
    h2 = a2.relu()
    return a1, h1, a2, h2


def expected_grads(x, y, head: bool, detach: bool):
    """Gradients of sum_i CE(h_i M_i^T) (+ CE(h_2 W3^T + b3) with ``head``), by hand.

    ``detach``: block 1 gets only its own local loss's gradient (MF); otherwise also what flows down
    from everything above it through W2."""
    a1, h1, a2, h2 = forward(x)
    e1, e2 = error(h1 @ t(M1).T, y), error(h2 @ t(M2).T, y)
    grads = {"projections.0": e1.T @ h1, "projections.1": e2.T @ h2}
    dh2 = e2 @ t(M2)
    if head:
        e3 = error(h2 @ t(W3).T + t(B3), y)
        grads["net.head.1.weight"], grads["net.head.1.bias"] = e3.T @ h2, e3.sum(0)
        dh2 = dh2 + e3 @ t(W3)
    da2 = dh2 * (a2 > 0)
    grads["net.blocks.1.0.weight"], grads["net.blocks.1.0.bias"] = da2.T @ h1, da2.sum(0)
    dh1 = e1 @ t(M1) if detach else e1 @ t(M1) + da2 @ t(W2)
    da1 = dh1 * (a1 > 0)
    grads["net.blocks.0.1.weight"], grads["net.blocks.0.1.bias"] = da1.T @ x, da1.sum(0)
    return grads


def assert_one_sgd_step(name, head, detach):
    trainer = make(name)
    x, y = batch()
    before = snapshot(trainer)
    want = expected_grads(x, y, head=head, detach=detach)
    assert set(want) == set(before)
    trainer.start_epoch(0, 1)
    trainer.update(x, y)
    for key, p in trainer.named_parameters():
        torch.testing.assert_close(p.detach(), before[key] - LR * want[key], atol=ATOL, rtol=0, msg=key)


def test_the_hand_weights_exercise_every_relu_gate():
    a1, _, a2, _ = forward(t(X))
    for a in (a1, a2):
        assert (a > 0).any(0).all() and (a <= 0).any(0).all()  # every unit is on and off in the batch


def test_bp_ds_one_sgd_step_matches_hand_gradients():
    """Head CE + CE(G_1) + CE(G_2), one backward pass, nothing detached: every gradient global."""
    assert_one_sgd_step("bp-ds", head=True, detach=False)


def test_mf_joint_one_sgd_step_matches_hand_gradients():
    """CE(G_1) + CE(G_2), one backward pass, nothing detached: block 1 also learns from CE(G_2)."""
    assert_one_sgd_step("mf-joint", head=False, detach=False)


def test_mf_one_sgd_step_matches_the_detached_formulas():
    """The same formulas with the detach give MF's update (the ladder's last rung, for reference)."""
    assert_one_sgd_step("mf", head=False, detach=True)


def test_bp_ds_first_block_gets_more_than_bp_gradient_while_the_head_gets_the_same():
    x, y = batch()
    ds, bp = step_grads(make("bp-ds"), x, y), step_grads(make("bp"), x, y)
    for key in ("net.blocks.0.1.weight", "net.blocks.1.0.weight"):
        assert not torch.allclose(ds[key], bp[key], atol=1e-4), key
    for key in ("net.head.1.weight", "net.head.1.bias"):  # the output loss sees the same forward pass
        torch.testing.assert_close(ds[key], bp[key], atol=ATOL, rtol=0, msg=key)


def test_mf_joint_differs_from_mf_in_the_first_block_only():
    x, y = batch()
    joint, mf = step_grads(make("mf-joint"), x, y), step_grads(make("mf"), x, y)
    assert set(joint) == set(mf)
    for key in ("net.blocks.0.1.weight", "net.blocks.0.1.bias"):  # CE(G_2) reaches block 1 without the detach
        assert not torch.allclose(joint[key], mf[key], atol=1e-4), key
    for key in ("net.blocks.1.0.weight", "net.blocks.1.0.bias", "projections.0", "projections.1"):
        torch.testing.assert_close(joint[key], mf[key], atol=ATOL, rtol=0, msg=key)


def test_same_seed_same_start_as_the_neighbouring_rungs():
    """bp-ds's network is BP's and mf-joint's whole state MF's under one seed: the rungs start alike."""
    def built(name):
        torch.manual_seed(3)
        return ALGORITHMS.get(name)((4,), 2, "mlp", {"widths": [3, 3]}, SGD)

    bp, ds, mf, joint = (built(n) for n in ("bp", "bp-ds", "mf", "mf-joint"))
    for k, v in bp.net.state_dict().items():
        assert torch.equal(v, ds.net.state_dict()[k]), k
    assert mf.state_dict().keys() == joint.state_dict().keys()
    for k, v in mf.state_dict().items():
        assert torch.equal(v, joint.state_dict()[k]), k


def test_losses_returned():
    x, y = batch()
    a1, h1, a2, h2 = forward(x)
    g1 = F.cross_entropy(h1 @ t(M1).T, y)
    g2 = F.cross_entropy(h2 @ t(M2).T, y)
    out = F.cross_entropy(h2 @ t(W3).T + t(B3), y)
    ds = make("bp-ds").update(x, y)
    assert set(ds) == {"loss", "loss_layer1", "loss_layer2"}
    torch.testing.assert_close(ds["loss"], out)  # the output head's, as BP reports it
    torch.testing.assert_close(ds["loss_layer1"], g1)
    torch.testing.assert_close(ds["loss_layer2"], g2)
    joint = make("mf-joint").update(x, y)
    assert set(joint) == {"loss", "loss_layer1", "loss_layer2"}
    torch.testing.assert_close(joint["loss"], (g1 + g2) / 2)  # the mean, as MF reports it
    assert all(not v.requires_grad for v in (*ds.values(), *joint.values()))


def test_prediction_modes():
    x, _ = batch()
    _, h1, _, h2 = forward(x)
    g1, g2 = h1 @ t(M1).T, h2 @ t(M2).T
    ds = make("bp-ds").train(False)
    assert ds.prediction_modes == ("output", "ff", "layer1", "layer2")
    torch.testing.assert_close(ds.predict(x), h2 @ t(W3).T + t(B3))
    torch.testing.assert_close(ds.predict(x, "ff"), g1 + g2)
    torch.testing.assert_close(ds.predict(x, "layer1"), g1)
    torch.testing.assert_close(ds.predict(x, "layer2"), g2)
    every = ds.predict_all(x)
    assert list(every) == list(ds.prediction_modes)
    for mode, scores in every.items():
        assert torch.equal(scores, ds.predict(x, mode)), mode
    blocks = 4 * 3 + 3 + 3 * 3 + 3
    assert ds.inference_parameters("output") == blocks + 2 * 3 + 2
    assert ds.inference_parameters("ff") == blocks + 2 * (2 * 3)
    assert ds.inference_parameters("layer1") == 4 * 3 + 3 + 2 * 3
    joint = make("mf-joint").train(False)
    assert joint.prediction_modes == make("mf").prediction_modes == ("ff", "bp", "layer1", "layer2")
    torch.testing.assert_close(joint.predict(x), g1 + g2)
    torch.testing.assert_close(joint.predict(x, "bp"), g2)
    with pytest.raises(ConfigError):
        ds.predict(x, "bp")


def test_conv_blocks_get_mf_s_projections_with_either_readout():
    for readout in ("flatten", "gap"):
        shapes = {}
        for name in ("mf", "bp-ds", "mf-joint"):
            trainer = ALGORITHMS.get(name)((1, 8, 8), 3, "cnn", {"channels": [2, 3]}, {"readout": readout})
            shapes[name] = [tuple(m.shape) for m in trainer.projections]
            x = torch.randn(2, 1, 8, 8)
            assert all(s.shape == (2, 3) for s in trainer.predict_all(x).values())
        assert shapes["bp-ds"] == shapes["mf-joint"] == shapes["mf"], readout
        assert shapes["mf"] == ([(3, 2 * 4 * 4), (3, 3 * 2 * 2)] if readout == "flatten" else [(3, 2), (3, 3)])


@pytest.mark.parametrize("name", ["bp-ds", "mf-joint"])
def test_config_errors(name):
    with pytest.raises(ConfigError, match="unknown readout"):
        make(name, readout="max")
    with pytest.raises(ConfigError):
        make(name, loss_weight=0.5)  # a plain sum: no weighting setting
    if name == "mf-joint":
        with pytest.raises(ConfigError):
            make(name, schedule="sequential")  # simultaneous only


class RecordingTrial:
    """Answers every suggestion with its first choice / lower bound and records what was asked."""

    def __init__(self):
        self.asked = set()

    def suggest_categorical(self, name, choices):
        self.asked.add(name)
        return choices[0]

    def suggest_float(self, name, low, high, log=False):
        self.asked.add(name)
        return low


def searched(name, arch):
    trial = RecordingTrial()
    search_space(name)[0](trial, {"arch": arch, "arch_args": {}, "epochs": 10})
    return trial.asked


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_search_spaces_share_bp_and_mf_dimensions(arch):
    shared = searched("bp", arch)
    assert shared <= searched("mf", arch)
    # the dimensions MF adds that these rungs have too: the readout of conv blocks, never the schedule
    own = searched("mf", arch) - shared - {"schedule"}
    assert searched("bp-ds", arch) == searched("mf-joint", arch) == shared | own
    assert ("readout" in own) == (arch == "cnn")
