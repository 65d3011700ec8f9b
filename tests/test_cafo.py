"""CaFo (cafo-rand, cafo-dfa): update rules against hand computations, no backprop through blocks,
BatchNorm statistics, and learning on scikit-learn's digits.

References use explicit formulas in float64 with plain SGD (a parameter's change after one step is
exactly ``-lr * gradient``), like tests/test_update_rules.py.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from algorithms import ALGORITHMS, ConfigError
from algorithms.cafo import sparsemax, sparsemax_loss

LR = 0.1
SGD = {"optimizer": "sgd", "lr": LR, "momentum": 0.0}
EPS = 1e-5  # BatchNorm2d's default eps


def make(name, input_shape=(1, 4, 4), channels=(2, 3), classes=3, arch="cafo-cnn", **hp):
    torch.manual_seed(0)
    arch_args = {"channels": list(channels)} if arch == "cafo-cnn" else {"widths": list(channels)}
    return ALGORITHMS.get(name)(input_shape, classes, arch, arch_args, {**SGD, **hp}).double()


def batch(n=6, shape=(1, 4, 4), classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


def params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def block_features(trainer, x):
    """Each cafo-cnn block's output by explicit formulas: conv, ReLU, 2x2 max, batch-statistics BN."""
    out, h = [], x
    for block in trainer.net.blocks:
        conv, bn = block[0], block[3]
        a = F.max_pool2d(F.conv2d(h, conv.weight, conv.bias, padding=1).relu(), 2)
        mean = a.mean((0, 2, 3), keepdim=True)
        var = a.var((0, 2, 3), unbiased=False, keepdim=True)
        h = (a - mean) / torch.sqrt(var + EPS) * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]
        out.append(h.detach().flatten(1))
    return out


def onehot(y, classes=3):
    return F.one_hot(y, classes).double()


# -- predictors ---------------------------------------------------------------------------------
def test_ce_predictor_step_matches_hand_gradient_and_blocks_stay_fixed():
    t = make("cafo-rand", loss="ce")
    x, y = batch()
    feats = block_features(t, x)
    before, blocks_before = params(t.predictors), params(t.net.blocks)
    t.update(x, y)
    for i, f in enumerate(feats):
        w, b = before[f"{i}.weight"], before[f"{i}.bias"]
        e = ((f @ w.T + b).softmax(1) - onehot(y)) / len(y)
        torch.testing.assert_close(t.predictors[i].weight.detach(), w - LR * e.T @ f)
        torch.testing.assert_close(t.predictors[i].bias.detach(), b - LR * e.sum(0))
    for k, v in params(t.net.blocks).items():
        assert torch.equal(v, blocks_before[k]), k
    assert all(p.grad is None for p in t.net.blocks.parameters())


def ridge_reference(feats, targets, ridge):
    """numpy least squares on [A; sqrt(n*ridge) D] W = [Y; 0]: the ridge solution, bias not shrunk."""
    a = np.concatenate([np.concatenate([f, np.ones((len(f), 1))], 1) for f in feats])
    y = np.concatenate(targets)
    if ridge == 0:
        return np.linalg.lstsq(a, y, rcond=None)[0]
    d = a.shape[1]
    penalty = np.sqrt(len(a) * ridge) * np.eye(d)[:-1]  # no row for the bias
    return np.linalg.lstsq(np.concatenate([a, penalty]), np.concatenate([y, np.zeros((d - 1, y.shape[1]))]),
                           rcond=None)[0]


@pytest.mark.parametrize("ridge", [0.0, 0.3])
def test_closed_form_mse_is_the_ridge_solution_over_the_epoch(ridge):
    t = make("cafo-rand", channels=(2,), loss="mse", ridge=ridge)  # 8 features: 16 samples determine it
    batches = [batch(8, seed=s) for s in (1, 2)]
    feats = [block_features(t, x)[0].numpy() for x, _ in batches]
    t.start_epoch(0, 1)
    for x, y in batches:
        t.update(x, y)
    t.end_epoch()
    w = ridge_reference(feats, [onehot(y).numpy() for _, y in batches], ridge)
    np.testing.assert_allclose(t.predictors[0].weight.detach().numpy(), w[:-1].T, atol=1e-8)
    np.testing.assert_allclose(t.predictors[0].bias.detach().numpy(), w[-1], atol=1e-8)
    # a new epoch starts new sums: one batch alone gives that batch's solution
    t.start_epoch(1, 2)
    t.update(*batches[1])
    t.predict(batches[1][0])  # predict solves pending sums when no end_epoch came
    w1 = ridge_reference(feats[1:], [onehot(batches[1][1]).numpy()], ridge)
    np.testing.assert_allclose(t.predictors[0].bias.detach().numpy(), w1[-1], atol=1e-8)


def test_sparsemax_and_its_loss_gradient():
    z = torch.tensor([[2.0, 1.0, -1.0], [0.1, 0.2, 0.3], [5.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    p = sparsemax(z)
    torch.testing.assert_close(p.sum(1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(p[0], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))  # gap >= 1: one-hot
    # all three in the support: threshold (0.6 - 1) / 3, so p = z + 0.4 / 3
    torch.testing.assert_close(p[1], torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64) + 0.4 / 3)
    y = torch.tensor([1, 2, 0])
    sparsemax_loss(z, y).backward()
    torch.testing.assert_close(z.grad, (p.detach() - onehot(y)) / 3)


# -- cafo-dfa: DFA on the blocks, never backprop through them ---------------------------------------
def linear(block):
    return [m for m in block.modules() if isinstance(m, torch.nn.Linear)][0]


@pytest.mark.parametrize("dfa_error", ["predictors", "head"])
def test_dfa_block_gradients_match_hand_computation(dfa_error):
    """On an MLP (Linear -> ReLU blocks): block i's gradient is ((e B_i^T) * relu') ^T h_{i-1}."""
    t = make("cafo-dfa", input_shape=(5,), channels=(4, 3), arch="mlp", dfa_error=dfa_error)
    t.start_epoch(0, 2)
    assert t.phase == "blocks"
    x, y = batch(6, shape=(5,))
    before = params(t)
    l1, l2 = linear(t.net.blocks[0]), linear(t.net.blocks[1])
    a1 = x @ l1.weight.T + l1.bias
    h1 = a1.relu()
    a2 = h1 @ l2.weight.T + l2.bias
    h2 = a2.relu()
    if dfa_error == "predictors":
        z = [h1 @ t.predictors[0].weight.T + t.predictors[0].bias, h2 @ t.predictors[1].weight.T + t.predictors[1].bias]
        logits = z[0] + z[1]
    else:
        logits = h2 @ t.dfa_head.weight.T + t.dfa_head.bias
    e = (logits.softmax(1) - onehot(y)) / len(y)
    d1 = (e @ t.feedback0.T) * (a1 > 0)
    d2 = (e @ t.feedback1.T) * (a2 > 0)
    t.update(x, y)
    got = {k: (before[k] - v.detach()) / LR for k, v in t.named_parameters()}
    torch.testing.assert_close(got["net.blocks.0.1.weight"], d1.T @ x)
    torch.testing.assert_close(got["net.blocks.0.1.bias"], d1.sum(0))
    torch.testing.assert_close(got["net.blocks.1.0.weight"], d2.T @ h1)
    if dfa_error == "predictors":  # each predictor: its own CE gradient on its block's output
        for i, (f, zi) in enumerate(zip([h1, h2], z)):
            ei = (zi.softmax(1) - onehot(y)) / len(y)
            torch.testing.assert_close(got[f"predictors.{i}.weight"], ei.T @ f)
    else:  # the head learns from its own gradient; predictors wait for their phase
        torch.testing.assert_close(got["dfa_head.weight"], e.T @ h2)
        assert all(torch.equal(got[f"predictors.{i}.weight"], torch.zeros_like(got[f"predictors.{i}.weight"]))
                   for i in range(2))


def reachable_params(root):
    """Every leaf tensor that a backward pass from ``root`` would write a gradient into."""
    seen, stack, out = set(), [root.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):
            out.add(id(fn.variable))
        stack.extend(f for f, _ in fn.next_functions)
    return out


@pytest.mark.parametrize("dfa_error", ["predictors", "head"])
def test_cafo_dfa_never_backpropagates_a_loss_into_the_blocks(monkeypatch, dfa_error):
    """Every backward call is recorded: a loss root reaches no block parameter, and block i's injected
    root reaches block i's parameters only, in both phases."""
    t = make("cafo-dfa", dfa_error=dfa_error)
    block_ids = [{id(p) for p in b.parameters()} for b in t.net.blocks]
    all_block_ids = set().union(*block_ids)
    calls = []
    real_backward = torch.autograd.backward

    def recording_backward(tensors, grad_tensors=None, *args, **kwargs):
        roots = [tensors] if torch.is_tensor(tensors) else list(tensors)
        grads = [None] * len(roots) if grad_tensors is None else (
            [grad_tensors] if torch.is_tensor(grad_tensors) else list(grad_tensors))
        calls.append([(reachable_params(r), g is not None) for r, g in zip(roots, grads)])
        return real_backward(tensors, grad_tensors, *args, **kwargs)

    monkeypatch.setattr(torch.autograd, "backward", recording_backward)
    x, y = batch()
    t.start_epoch(0, 2)
    t.update(x, y)
    assert len(calls) == 1
    loss_roots = [r for r, injected in calls[0] if not injected]
    block_roots = [r for r, injected in calls[0] if injected]
    assert len(loss_roots) == 1 and not loss_roots[0] & all_block_ids  # the loss reaches no block
    assert [r & all_block_ids for r in block_roots] == block_ids  # block i's root: block i only
    grads = {id(p): p.grad for p in t.net.blocks.parameters()}
    assert all(g is not None for g in grads.values())

    calls.clear()
    t.start_epoch(1, 2)
    blocks_before = params(t.net.blocks)
    t.update(x, y)
    assert t.phase == "predictors"
    assert len(calls) == 1 and all(not r & all_block_ids for r, _ in calls[0])
    for k, v in params(t.net.blocks).items():  # frozen in the predictor phase
        assert torch.equal(v, blocks_before[k]), k


def test_cafo_cnn_dfa_gradient_is_the_injected_error_through_the_block_alone():
    """On cafo-cnn: block i's gradient equals d<block_i(h_{i-1}), B_i e>/dW with h_{i-1} held fixed."""
    t = make("cafo-dfa")
    t.start_epoch(0, 3)
    x, y = batch()
    ref = make("cafo-dfa")
    ref.load_state_dict(t.state_dict())
    hs, h = [], x
    for block in ref.net.blocks:
        h = block(h.detach())
        hs.append(h)
    logits = sum(p(hi.flatten(1)) for p, hi in zip(ref.predictors, hs))
    e = ((logits.softmax(1) - onehot(y)) / len(y)).detach()
    want = [torch.autograd.grad(hi, list(b.parameters()), (e @ getattr(ref, f"feedback{i}").T).view_as(hi))
            for i, (b, hi) in enumerate(zip(ref.net.blocks, hs))]
    before = params(t.net.blocks)
    t.update(x, y)
    for i, block in enumerate(t.net.blocks):
        for (name, p), g in zip(block.named_parameters(), want[i]):
            torch.testing.assert_close((before[f"{i}.{name}"] - p.detach()) / LR, g, msg=f"block {i} {name}")


def test_cafo_dfa_schedule_and_bad_settings():
    t = make("cafo-dfa", block_epochs=2)
    phases = []
    for epoch in range(4):
        t.start_epoch(epoch, 4)
        phases.append(t.phase)
    assert phases == ["blocks", "blocks", "predictors", "predictors"]
    with pytest.raises(ConfigError, match="more than 2 epochs"):
        t.start_epoch(0, 2)
    with pytest.raises(ConfigError, match="unknown loss"):
        make("cafo-rand", loss="hinge")
    with pytest.raises(ConfigError, match="too small"):
        make("cafo-rand", input_shape=(1, 4, 4), channels=(2, 2, 2))
    with pytest.raises(ConfigError, match="image input"):
        make("cafo-rand", input_shape=(16,))


# -- BatchNorm and prediction -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cafo-rand", "cafo-dfa"])
def test_predict_uses_running_statistics_and_never_changes_them(name):
    t = make(name)
    t.start_epoch(0, 2)
    for s in range(3):
        t.update(*batch(seed=s))
    bn = [b[3] for b in t.net.blocks]
    assert not torch.equal(bn[0].running_mean, torch.zeros_like(bn[0].running_mean))  # training batches moved them
    stats = [(m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked)) for m in bn]
    x, _ = batch(10, seed=7)
    for training in (False, True):  # even a caller that forgot train(False)
        t.train(training)
        whole = t.predict(x)
        torch.testing.assert_close(t.predict(x[:3]), whole[:3])  # no batch statistics of x
        assert t.training == training
    for m, (mean, var, n) in zip(bn, stats):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
        assert int(m.num_batches_tracked) == n


def test_prediction_modes_sum_the_blocks_distributions():
    t = make("cafo-rand", loss="ce")
    t.eval()
    x, _ = batch()
    modes = t.prediction_modes
    assert modes == ("sum", "block1", "block2")
    per_block = [t.predict(x, m) for m in modes[1:]]
    torch.testing.assert_close(per_block[0].sum(1), torch.ones(len(x), dtype=torch.float64))  # a distribution
    torch.testing.assert_close(t.predict(x), per_block[0] + per_block[1])
    blocks = [sum(p.numel() for p in b.parameters()) for b in t.net.blocks]
    preds = [sum(p.numel() for p in q.parameters()) for q in t.predictors]
    assert t.inference_parameters("block1") == blocks[0] + preds[0]
    assert t.inference_parameters("sum") == sum(blocks) + sum(preds)
    with pytest.raises(ConfigError, match="unknown prediction mode"):
        t.predict(x, "block3")


# -- learning on real data --------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm,hparams,epochs,minimum", [
    ("cafo-rand", {"loss": "mse"}, 1, 90.0),  # closed form: one epoch is the solution (measured ~97%)
    ("cafo-rand", {"loss": "ce", "lr": 3e-3}, 4, 85.0),
    ("cafo-dfa", {"loss": "ce", "lr": 3e-3}, 4, 85.0),
])
def test_learns_digits(tmp_path, algorithm, hparams, epochs, minimum):
    from benchmarks.run.config import ExperimentConfig
    from benchmarks.run.runner import run_experiment

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = ExperimentConfig(algorithm=algorithm, dataset="digits", arch="cafo-cnn", arch_args={"channels": [8, 16]},
                           hparams=hparams, epochs=epochs, batch_size=32, device="cpu", quiet=True,
                           results_dir=str(tmp_path))
    try:
        summary = run_experiment(cfg).summary
    finally:  # the next tests run with the thread count they were given
        torch.set_num_threads(threads)
    assert summary["final"]["test_acc_sum"] >= minimum, summary["final"]
    assert summary["final"]["phase"] == "predictors"


@pytest.mark.parametrize("dfa_error, selectable_in_block_phase", [("predictors", True), ("head", False)])
def test_a_run_may_select_an_epoch_of_the_block_phase_only_when_the_predictors_learn_in_it(
        dfa_error, selectable_in_block_phase):
    t = make("cafo-dfa", input_shape=(5,), channels=(4, 3), arch="mlp", dfa_error=dfa_error, block_epochs=2)
    t.start_epoch(0, 4)
    assert t.phase == "blocks" and t.final_phase is selectable_in_block_phase
    t.start_epoch(2, 4)
    assert t.phase == "predictors" and t.final_phase
