"""Update-rule tests aimed at plausible bugs that tests/test_update_rules.py lets through.

Each test below was checked to fail with its bug put into the code (see the docstrings):

* MF's sequential schedule: which layer learns in every epoch, and that only it moves;
* FA with two or more hidden layers: every hidden layer's error goes through feedback matrices;
* FF: per-sample normalisation (explicit formulas), negatives uniform over the other classes;
* MF: no gradient crosses from a block's loss into the blocks below it (the ``h.detach()``);
* determinism of what is drawn at random: FF's negatives, FA's and DFA's feedback matrices.

As in tests/test_update_rules.py: tiny networks, float64, plain SGD, references written as
explicit matrix formulas (no autograd, no detaching in the test).
"""

import pytest
import torch
import torch.nn.functional as F

from algorithms import ALGORITHMS
from tests.test_update_rules import LR, SGD, batch, linear, make, mf_reference, output_error, snapshot, step_grads


def param_name(trainer, param):
    return next(k for k, p in trainer.named_parameters() if p is param)


# -- 1. MF's sequential schedule -----------------------------------------------------------------

def mf_layer_params(trainer, i):
    """Names of the parameters block i learns: its own and its projection M_i."""
    return [k for k, _ in trainer.named_parameters() if k.startswith(f"net.blocks.{i}.") or k == f"projections.{i}"]


def test_mf_sequential_schedule_literal_for_seven_epochs_three_layers():
    """Bug ``layer = epoch % n``: gives 0 1 2 0 1 2 0."""
    t = make("mf", [4, 5, 3], schedule="sequential")
    phases = []
    for epoch in range(7):
        t.start_epoch(epoch, 7)
        phases.append(t.phase)
        assert t.active == [int(t.phase[len("layer"):]) - 1]
    assert phases == ["layer1", "layer1", "layer1", "layer2", "layer2", "layer3", "layer3"]


@pytest.mark.parametrize("widths,num_epochs", [([4, 5], 2), ([4, 5], 4), ([4, 5], 5),
                                               ([4, 5, 3], 3), ([4, 5, 3], 4), ([4, 5, 3], 8)])
def test_mf_sequential_schedule_every_epoch_only_its_layer_learns(widths, num_epochs):
    """Every epoch: the layer ``epoch * n // N`` learns (each of its tensors changes) and every other
    parameter stays bit for bit as it was. Bug ``layer = epoch % n``: fails for N > n."""
    n = len(widths)
    t = make("mf", widths, schedule="sequential")
    x, y = batch()
    seen = set()
    for epoch in range(num_epochs):
        t.start_epoch(epoch, num_epochs)
        layer = epoch * n // num_epochs
        seen.add(layer)
        assert t.phase == f"layer{layer + 1}", (epoch, t.phase)
        for _ in range(2):  # two updates in the epoch: the same layer both times
            before = snapshot(t)
            losses = t.update(x, y)
            assert set(losses) == {f"loss_layer{layer + 1}", "loss"}
            learning = set(mf_layer_params(t, layer))
            for k, v in t.named_parameters():
                if k in learning:
                    assert not torch.equal(v, before[k]), f"epoch {epoch}: {k} of the learning layer did not change"
                else:
                    assert torch.equal(v, before[k]), f"epoch {epoch}: {k} changed outside its phase"
    assert seen == set(range(n))  # every layer gets its phase


def test_mf_sequential_learning_layer_follows_the_frozen_ones():
    """In layer 2's phase, layer 2 learns exactly its local gradient on the frozen layer 1's output."""
    t = make("mf", [4, 5], schedule="sequential")
    x, y = batch()
    t.start_epoch(2, 4)
    want = mf_reference(t, x, y)
    got = step_grads(t, x, y)
    for k in mf_layer_params(t, 1):
        torch.testing.assert_close(got[k], want[k], msg=k)
    for k in mf_layer_params(t, 0):
        assert got[k].abs().sum() == 0


# -- 2. FA with several hidden layers ------------------------------------------------------------

def fa_reference(t, x, y, through="feedback"):
    """Gradients of every layer by hand: the error goes down through each layer's ``feedback``
    (or, for comparison, ``through="weight"``: backprop's transposed weights)."""
    layers = [linear(b) for b in t.net.blocks] + [linear(t.net.head)]
    inputs, pre = [], []
    h = x
    for k, lin in enumerate(layers):
        inputs.append(h)
        a = h @ lin.weight.T + lin.bias
        pre.append(a)
        h = a.relu() if k < len(layers) - 1 else a
    delta = output_error(h, y)
    want = {}
    for k in reversed(range(len(layers))):
        lin = layers[k]
        want[param_name(t, lin.weight)] = delta.T @ inputs[k]
        want[param_name(t, lin.bias)] = delta.sum(0)
        if k > 0:
            back = lin.feedback if through == "feedback" else lin.weight
            delta = (delta @ back) * (pre[k - 1] > 0)
    return want


@pytest.mark.parametrize("widths", [[4, 5], [4, 5, 3]])
def test_fa_every_hidden_layer_uses_feedback_matrices(widths):
    """Bug: FA only at the head, the hidden layers' backward plain BP (error @ weight)."""
    t = make("fa", widths)
    x, y = batch()
    layers = [linear(b) for b in t.net.blocks] + [linear(t.net.head)]
    for lin in layers:
        assert not torch.allclose(lin.feedback, lin.weight)
    want = fa_reference(t, x, y)
    bp = fa_reference(t, x, y, through="weight")
    feedback_before = [lin.feedback.clone() for lin in layers]
    got = step_grads(t, x, y)
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], msg=k)
    # the check is not vacuous: backprop's gradient differs from FA's in the lowest layer
    first = param_name(t, layers[0].weight)
    assert not torch.allclose(want[first], bp[first])
    for lin, before in zip(layers, feedback_before):
        assert torch.equal(lin.feedback, before)


# -- 3. FF: per-sample normalisation and uniform negatives ---------------------------------------

def normalise_by_hand(h, normalisation):
    """Each row on its own: by its root mean square, or to unit length."""
    if normalisation == "rms":
        return h / (h.pow(2).sum(1, keepdim=True) / h.shape[1] + 1e-8).sqrt()
    return h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-4)


def ff_activations_by_hand(t, h, normalisation):
    acts = []
    for block in t.net.blocks:
        lin = linear(block)
        h = (normalise_by_hand(h, normalisation) @ lin.weight.T + lin.bias).relu()
        acts.append(h)
    return acts


def rows_of_different_scale(n=6, classes=3):
    x, y = batch(n=n, classes=classes)
    scales = torch.tensor([1e-2, 0.3, 1.0, 4.0, 30.0, 200.0], dtype=torch.float64)[:n]
    return x * scales[:, None], y


@pytest.mark.parametrize("normalisation", ["rms", "unit"])
def test_ff_normalisation_is_per_sample_in_every_pass(normalisation):
    """Bug: the normalising scale taken over the whole batch (one number) instead of per row."""
    t = make("ff", [4, 5], normalisation=normalisation)
    x, y = rows_of_different_scale()
    y_neg = (y + 1) % 3
    with torch.no_grad():
        # layer_activations, on rows whose scales differ by 4 orders of magnitude
        h = t.embed(x, y)
        for got, want in zip(t.layer_activations(h), ff_activations_by_hand(t, h, normalisation)):
            torch.testing.assert_close(got, want)
        # the training pass (shared first-layer product) for positive and negative labels
        pos, neg, _ = t.labelled_activations(x, [y, y_neg, None])
        for label, acts in ((y, pos), (y_neg, neg)):
            for got, want in zip(acts, ff_activations_by_hand(t, t.embed(x, label), normalisation)):
                torch.testing.assert_close(got, want)
        # prediction: each label's goodness, each sample as if alone in its batch
        scores = t.predict(x, "goodness")
        for label in range(3):
            acts = ff_activations_by_hand(t, t.embed(x, torch.full((len(x),), label)), normalisation)
            torch.testing.assert_close(scores[:, label], sum(a.pow(2).sum(1) for a in acts))
        for mode in t.prediction_modes:
            whole = t.predict(x, mode)
            for i in range(len(x)):
                torch.testing.assert_close(whole[i:i + 1], t.predict(x[i:i + 1], mode), msg=f"{mode} row {i}")


def test_ff_negatives_uniform_over_the_other_classes():
    """Chi-square over the counts of every (true, wrong) pair. Bug ``(y + 1) % C``: one wrong class
    per true class (chi-square in the tens of thousands)."""
    classes, per_class = 5, 4000
    t = make("ff", [4], classes=classes)
    y = torch.arange(classes).repeat(per_class)
    torch.manual_seed(1234)
    y_neg = t.wrong_labels(y)
    counts = torch.zeros(classes, classes, dtype=torch.float64)
    counts.index_put_((y, y_neg), torch.ones(len(y), dtype=torch.float64), accumulate=True)
    assert counts.diagonal().sum() == 0  # never the true label
    expected = per_class / (classes - 1)
    off = ~torch.eye(classes, dtype=torch.bool)
    chi2 = float(((counts[off] - expected) ** 2 / expected).sum())
    # C * (C - 2) = 15 degrees of freedom: P(chi2 > 50) is about 1e-5
    assert chi2 < 50, (chi2, counts)
    assert (counts[off] > 0.8 * expected).all()


# -- 4. MF: no gradient crosses blocks ------------------------------------------------------------

def test_mf_update_of_three_blocks_equals_hand_computed_local_gradients():
    """Bug: MF's ``h.detach()`` removed (block i's loss reaching the blocks below it)."""
    t = make("mf", [4, 5, 3])
    t.start_epoch(0, 1)
    x, y = batch()
    want = mf_reference(t, x, y)
    got = step_grads(t, x, y)
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], msg=k)


def test_mf_lower_block_update_does_not_depend_on_upper_losses():
    """Block 1's (and block 2's) change is the same bit for bit whatever the upper blocks' losses
    are: a copy with other upper projections (so other upper losses) moves the lower blocks equally.
    Bug: MF's ``h.detach()`` removed."""
    x, y = batch()
    a, b = make("mf", [4, 5, 3]), make("mf", [4, 5, 3])
    with torch.no_grad():
        b.projections[1].mul_(-7.0)
        b.projections[2].copy_(torch.randn_like(b.projections[2]) * 5)
    a.update(x, y)
    b.update(x, y)
    for k in mf_layer_params(a, 0):
        assert torch.equal(dict(a.named_parameters())[k], dict(b.named_parameters())[k]), k
    # and block 2, given the same input, moves the same under a different block-3 loss
    c, d = make("mf", [4, 5, 3]), make("mf", [4, 5, 3])
    with torch.no_grad():
        d.projections[2].mul_(-3.0)
    c.update(x, y)
    d.update(x, y)
    for k in mf_layer_params(c, 0) + mf_layer_params(c, 1):
        assert torch.equal(dict(c.named_parameters())[k], dict(d.named_parameters())[k]), k


# -- 5. determinism of random draws ---------------------------------------------------------------

def build(name, seed, widths=(4, 5), **hp):
    torch.manual_seed(seed)
    return ALGORITHMS.get(name)((6,), 3, "mlp", {"widths": list(widths)}, {**SGD, **hp}).double()


def ff_negatives(seed):
    t = build("ff", 0)
    y = torch.arange(3).repeat(50)
    torch.manual_seed(seed)
    return t.wrong_labels(y)


def test_ff_negatives_are_determined_by_the_seed():
    """Bug: negatives from an unseeded (or a fixed) generator."""
    assert torch.equal(ff_negatives(3), ff_negatives(3))
    assert not torch.equal(ff_negatives(3), ff_negatives(4))
    # and through update(): same seed, same parameters after a step; another seed, other parameters
    x, y = batch(n=20)

    def after_update(seed):
        t = build("ff", 0, onepass_head=False)
        torch.manual_seed(seed)
        t.update(x, y)
        return snapshot(t)

    p, q, r = after_update(5), after_update(5), after_update(6)
    assert all(torch.equal(p[k], q[k]) for k in p)
    assert any(not torch.equal(p[k], r[k]) for k in p)


def feedback_buffers(t):
    return {k: v.clone() for k, v in t.named_buffers() if "feedback" in k}


@pytest.mark.parametrize("name", ["fa", "dfa"])
def test_feedback_matrices_are_determined_by_the_seed(name):
    """Bug: feedback drawn from an unseeded (or a fixed) generator."""
    a, b, c = (feedback_buffers(build(name, s)) for s in (11, 11, 12))
    expected = 3 if name == "fa" else 2  # FA: every Linear incl. the head; DFA: one per hidden block
    assert len(a) == expected and set(a) == set(b) == set(c)
    for k in a:
        assert torch.equal(a[k], b[k]), k
        assert not torch.equal(a[k], c[k]), k


def test_fa_on_a_cnn_trains_under_bf16_autocast():
    """The feedback convolution's backward ran a float32 kernel on a bfloat16 gradient and crashed."""
    from algorithms import ALGORITHMS

    torch.manual_seed(0)
    trainer = ALGORITHMS.get("fa")((3, 8, 8), 4, "cnn", {"channels": [4, 8]}, {})
    before = [p.detach().clone() for p in trainer.parameters()]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = trainer.update(torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,)))
    assert torch.isfinite(losses["loss"]).all()
    assert all(p.dtype == torch.float32 for p in trainer.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.parameters()))
