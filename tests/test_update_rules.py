"""Each algorithm's update rule against a hand-computed reference on a tiny network.

The references below use explicit matrix formulas (no autograd), in float64, with plain SGD, so a
parameter's change after one step is exactly ``-lr * gradient``.
"""

import pytest
import torch
import torch.nn.functional as F

from algorithms import ALGORITHMS, ConfigError
from algorithms.ff import cooldown_factor, goodness

LR = 0.1
SGD = {"optimizer": "sgd", "lr": LR, "momentum": 0.0}


def make(name, widths, input_dim=6, classes=3, **hp):
    torch.manual_seed(0)
    return ALGORITHMS.get(name)((input_dim,), classes, "mlp", {"widths": widths}, {**SGD, **hp}).double()


def batch(n=5, input_dim=6, classes=3):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, input_dim, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


def snapshot(trainer):
    return {k: v.detach().clone() for k, v in trainer.named_parameters()}


def step_grads(trainer, x, y):
    """Apply one update and return -(change)/lr per parameter, i.e. the gradient that was used."""
    before = snapshot(trainer)
    trainer.update(x, y)
    return {k: (before[k] - v.detach()) / LR for k, v in trainer.named_parameters()}


def linear(block):
    return [m for m in block.modules() if isinstance(m, torch.nn.Linear)][0]


def output_error(logits, y):
    return (logits.softmax(1) - F.one_hot(y, logits.shape[1]).double()) / len(y)


def test_bp_matches_hand_gradients():
    t = make("bp", [4])
    x, y = batch()
    l1, l2 = linear(t.net.blocks[0]), linear(t.net.head)
    a = x @ l1.weight.T + l1.bias
    h = a.relu()
    e = output_error(h @ l2.weight.T + l2.bias, y)
    da = (e @ l2.weight) * (a > 0)
    want = {"net.head.1.weight": e.T @ h, "net.head.1.bias": e.sum(0),
            "net.blocks.0.1.weight": da.T @ x, "net.blocks.0.1.bias": da.sum(0)}
    got = step_grads(t, x, y)
    for k in want:
        torch.testing.assert_close(got[k], want[k], msg=k)


def test_fa_sends_error_through_fixed_feedback_not_transposed_weights():
    t = make("fa", [4])
    x, y = batch()
    l1, l2 = linear(t.net.blocks[0]), linear(t.net.head)
    assert not torch.allclose(l2.feedback, l2.weight)
    a = x @ l1.weight.T + l1.bias
    h = a.relu()
    e = output_error(h @ l2.weight.T + l2.bias, y)
    da_fa = (e @ l2.feedback) * (a > 0)
    da_bp = (e @ l2.weight) * (a > 0)
    feedback_before = l2.feedback.clone()
    got = step_grads(t, x, y)
    torch.testing.assert_close(got["net.head.1.weight"], e.T @ h)  # the top layer's own gradient is BP's
    torch.testing.assert_close(got["net.blocks.0.1.weight"], da_fa.T @ x)
    assert not torch.allclose(got["net.blocks.0.1.weight"], da_bp.T @ x)
    assert torch.equal(l2.feedback, feedback_before)  # feedback stays fixed
    assert "feedback" not in " ".join(n for n, _ in t.named_parameters())


def test_dfa_hidden_layers_receive_projected_output_error():
    t = make("dfa", [4, 5])
    x, y = batch()
    l1, l2, l3 = linear(t.net.blocks[0]), linear(t.net.blocks[1]), linear(t.net.head)
    a1 = x @ l1.weight.T + l1.bias
    h1 = a1.relu()
    a2 = h1 @ l2.weight.T + l2.bias
    h2 = a2.relu()
    e = output_error(h2 @ l3.weight.T + l3.bias, y)
    da1 = (e @ t.feedback(0).T) * (a1 > 0)  # B_1 e, gated by the layer's own derivative
    da2 = (e @ t.feedback(1).T) * (a2 > 0)
    want = {"net.head.1.weight": e.T @ h2, "net.blocks.1.0.weight": da2.T @ h1, "net.blocks.1.0.bias": da2.sum(0),
            "net.blocks.0.1.weight": da1.T @ x, "net.blocks.0.1.bias": da1.sum(0)}
    got = step_grads(t, x, y)
    for k in want:
        torch.testing.assert_close(got[k], want[k], msg=k)


def test_dfa_lr_decay_scales_the_step_of_epoch_e_by_decay_to_the_e():
    """Epoch 2 (0-based) of lr_decay 0.5 moves every weight by a quarter of the same step at epoch 0."""
    x, y = batch()
    steps = {}
    for epoch in (0, 2):
        t = make("dfa", [4, 5], lr_decay=0.5)
        t.start_epoch(epoch, 10)
        steps[epoch] = step_grads(t, x, y)  # -(change)/LR
    for k in steps[0]:
        torch.testing.assert_close(steps[2][k], steps[0][k] * 0.25, msg=k)
    with pytest.raises(ConfigError, match="lr_decay must be in"):
        make("dfa", [4], lr_decay=1.5)


def mf_reference(t, x, y):
    want, inp = {}, x
    for i, block in enumerate(t.net.blocks):
        lin, m = linear(block), t.projections[i]
        a = inp @ lin.weight.T + lin.bias
        h = a.relu()
        e = output_error(h @ m.T, y)  # local cross-entropy of G_i = h M_i^T
        da = (e @ m) * (a > 0)
        want[f"projections.{i}"] = e.T @ h
        want[f"net.blocks.{i}.{1 if i == 0 else 0}.weight"] = da.T @ inp
        want[f"net.blocks.{i}.{1 if i == 0 else 0}.bias"] = da.sum(0)
        inp = h
    return want


def test_mf_gradients_are_local_cross_entropy_gradients():
    t = make("mf", [4, 5])
    t.start_epoch(0, 1)
    x, y = batch()
    want = mf_reference(t, x, y)
    got = step_grads(t, x, y)
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], msg=k)


def test_mf_no_gradient_reaches_an_earlier_layer():
    t = make("mf", [4, 5])
    x, y = batch()
    h = t.net.blocks[0](x)
    loss2 = F.cross_entropy(t.scores(1, t.net.blocks[1](h.detach())), y)
    loss2.backward()
    assert all(p.grad is None for p in t.net.blocks[0].parameters())
    # and through update(): layer 1's change is the same whether or not layer 2 exists
    deep, shallow = make("mf", [4, 5]), make("mf", [4])
    shallow.load_state_dict({k: v for k, v in deep.state_dict().items() if k in shallow.state_dict()})
    g_deep, g_shallow = step_grads(deep, x, y), step_grads(shallow, x, y)
    torch.testing.assert_close(g_deep["net.blocks.0.1.weight"], g_shallow["net.blocks.0.1.weight"])


def test_mf_sequential_schedule_trains_one_layer_at_a_time():
    t = make("mf", [4, 5], schedule="sequential")
    x, y = batch()
    t.start_epoch(0, 4)  # epochs 0-1 train layer 1, epochs 2-3 layer 2
    got = step_grads(t, x, y)
    assert t.phase == "layer1"
    assert got["net.blocks.1.0.weight"].abs().sum() == 0 and got["projections.1"].abs().sum() == 0
    assert got["net.blocks.0.1.weight"].abs().sum() > 0
    t.start_epoch(3, 4)
    got = step_grads(t, x, y)
    assert t.phase == "layer2"
    assert got["net.blocks.0.1.weight"].abs().sum() == 0 and got["projections.0"].abs().sum() == 0
    with pytest.raises(ConfigError):
        t.start_epoch(0, 1)  # fewer epochs than layers


@pytest.mark.parametrize("hp, schedule", [({"optimizer": "adam", "lr": 0.05}, "simultaneous"),
                                          ({"optimizer": "sgd", "lr": 0.05, "momentum": 0.9}, "simultaneous"),
                                          ({"optimizer": "adam", "lr": 0.05}, "sequential")])
def test_mf_one_step_per_update_equals_one_optimiser_per_block_stepped_at_once(hp, schedule):
    """MF steps one optimiser once per update: the same weights, after several updates, as the paper's
    per-layer loop (each block its own optimiser, stepped right after its own backward pass), Adam's
    moments and SGD's momentum included; the sequential schedule's frozen block stays put."""
    t = make("mf", [4, 5], schedule=schedule, **hp)
    ref = make("mf", [4, 5], schedule=schedule, **hp)
    per_block = [(torch.optim.Adam if hp["optimizer"] == "adam" else torch.optim.SGD)(
        [*block.parameters(), m], **{k: v for k, v in hp.items() if k != "optimizer"})
        for block, m in zip(ref.net.blocks, ref.projections)]
    x, y = batch()
    for epoch in (0, 0, 1, 3, 3):
        t.start_epoch(epoch, 4)
        t.update(x, y)
        ref.start_epoch(epoch, 4)
        h = x
        for i, (block, opt) in enumerate(zip(ref.net.blocks, per_block)):
            if i not in ref.active:
                h = block(h).detach()
                continue
            h = block(h.detach())
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(ref.scores(i, h), y).backward()
            opt.step()
    for (name, got), (_, want) in zip(t.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(got, want, msg=name)
    assert any((a - b).abs().max() > 1e-3 for a, b in zip(t.parameters(), make("mf", [4, 5]).parameters()))


def test_mf_prediction_modes():
    t = make("mf", [4, 5])
    x, _ = batch()
    g1 = t.scores(0, t.net.blocks[0](x))
    g2 = t.scores(1, t.net.blocks[1](t.net.blocks[0](x)))
    torch.testing.assert_close(t.predict(x, "ff"), g1 + g2)
    torch.testing.assert_close(t.predict(x, "bp"), g2)
    torch.testing.assert_close(t.predict(x, "layer1"), g1)
    assert t.inference_parameters("bp") == 6 * 4 + 4 + 4 * 5 + 5 + 3 * 5
    assert t.inference_parameters("ff") == t.inference_parameters("bp") + 3 * 4


@pytest.mark.parametrize("normalisation,logit", [("rms", "sum"), ("unit", "mean")])
def test_ff_gradients_match_hand_computed_goodness_loss(normalisation, logit):
    threshold = 0.5
    t = make("ff", [4, 5], onepass_head=False, threshold=threshold, normalisation=normalisation, logit=logit)
    x, y = batch()
    y_neg = (y + 1) % 3
    t.wrong_labels = lambda labels: y_neg
    want, pos, neg = {}, t.embed(x, y), t.embed(x, y_neg)
    for i, block in enumerate(t.net.blocks):
        lin = linear(block)
        grads, outs = [], []
        for inp, sign in ((pos, -1.0), (neg, 1.0)):
            # per sample, by hand: RMS (length sqrt(width)) or unit length
            if normalisation == "rms":
                u = inp / (inp.pow(2).sum(1, keepdim=True) / inp.shape[1] + 1e-8).sqrt()
            else:
                u = inp / (inp.pow(2).sum(1, keepdim=True).sqrt() + 1e-4)
            a = u @ lin.weight.T + lin.bias
            h = a.relu()
            width = h.shape[1]
            z = h.pow(2).sum(1) - threshold * width if logit == "sum" else h.pow(2).sum(1) / width - threshold
            dz = torch.sigmoid(sign * z) * sign / len(x)  # d/dz of softplus(sign*z), mean over batch
            dh = 2 * h * (1.0 if logit == "sum" else 1.0 / width)
            da = dz[:, None] * dh * (a > 0)
            grads.append((da.T @ u, da.sum(0)))
            outs.append(h)
        want[f"net.blocks.{i}.{1 if i == 0 else 0}.weight"] = grads[0][0] + grads[1][0]
        want[f"net.blocks.{i}.{1 if i == 0 else 0}.bias"] = grads[0][1] + grads[1][1]
        pos, neg = outs
    got = step_grads(t, x, y)
    for k in want:
        torch.testing.assert_close(got[k], want[k], msg=k)


@pytest.mark.parametrize("embedding", ["overlay", "concat"])
@pytest.mark.parametrize("normalisation", ["rms", "unit"])
def test_ff_batched_goodness_equals_one_pass_per_label(embedding, normalisation):
    t = make("ff", [4, 5], label_embedding=embedding, normalisation=normalisation, label_value=1.7)
    x, _ = batch(n=7)
    scores = t.predict(x, "goodness")
    for label in range(3):
        h = t.embed(x, torch.full((7,), label))
        total = 0
        for block in t.net.blocks:
            if normalisation == "rms":
                h = h / (h.pow(2).mean(1, keepdim=True) + 1e-8).sqrt()
            else:
                h = h / (h.norm(dim=1, keepdim=True) + 1e-4)
            h = block(h)
            total = total + h.pow(2).sum(1)
        torch.testing.assert_close(scores[:, label], total)


def test_ff_cooldown_halves_then_falls_linearly_to_the_last_epoch():
    assert [cooldown_factor(e, 4) for e in range(4)] == [1.0, 1.0, 1.0, 0.5]
    assert [round(cooldown_factor(e, 10), 2) for e in range(10)] == [1, 1, 1, 1, 1, 1.0, 0.8, 0.6, 0.4, 0.2]
    t = make("ff", [4], lr=0.2)
    t.start_epoch(8, 10)
    assert all(g["lr"] == pytest.approx(0.2 * 0.4) for opt in t.optimizers for g in opt.param_groups)
    off = make("ff", [4], lr=0.2, cooldown=False)
    off.start_epoch(8, 10)
    assert all(g["lr"] == 0.2 for opt in off.optimizers for g in opt.param_groups)


def test_ff_positive_goodness_rises_and_negative_falls():
    x, y = batch(n=32)
    t = make("ff", [20], onepass_head=False, optimizer="adam", lr=0.01)
    with torch.no_grad():  # a threshold between the two goodnesses, as after some training
        t.hp.threshold = float(goodness(t.layer_activations(t.embed(x, y))[0]).mean())
    y_neg = (y + 1) % 3
    t.wrong_labels = lambda labels: y_neg

    def goodnesses():
        with torch.no_grad():
            return [torch.stack([goodness(a).mean() for a in t.layer_activations(t.embed(x, lab))]) for lab in (y, y_neg)]

    pos0, neg0 = goodnesses()
    for _ in range(3):
        t.update(x, y)
    pos1, neg1 = goodnesses()
    assert (pos1 > pos0).all() and (neg1 < neg0).all()


def test_ff_negative_labels_are_never_the_true_label():
    t = make("ff", [4])
    y = torch.randint(0, 3, (10000,))
    y_neg = t.wrong_labels(y)
    assert not (y_neg == y).any()
    assert set(y_neg.tolist()) == {0, 1, 2}


def test_ff_label_embedding():
    t = make("ff", [4], label_value=2.0)
    x, y = batch()
    emb = t.embed(x, y)
    torch.testing.assert_close(emb[:, :3], 2.0 * F.one_hot(y, 3).double())
    torch.testing.assert_close(emb[:, 3:], x[:, 3:])
    c = make("ff", [4], label_embedding="concat")
    assert c.embed(x, y).shape == (5, 9)
    with pytest.raises(ConfigError):
        make("ff", [4], input_dim=2)  # fewer input features than classes cannot hold an overlay


def test_ff_onepass_head_reads_neutral_label_activations():
    t = make("ff", [4, 5])
    x, _ = batch()
    acts = t.layer_activations(t.embed(x, torch.full((5, 3), 1 / 3, dtype=torch.float64)))
    torch.testing.assert_close(t.predict(x, "onepass"), t.onepass(torch.cat(acts, 1)))
    scores = t.predict(x, "goodness")
    for label in range(3):
        acts = t.layer_activations(t.embed(x, torch.full((5,), label)))
        torch.testing.assert_close(scores[:, label], sum(goodness(a, "sum") for a in acts))


ONE_PASS_CASES = {  # name: (input shape, arch, arch args, own settings) of a tiny trainer with several modes
    "mf": ((6,), "mlp", {"widths": [4, 5]}, {}),
    "ff": ((6,), "mlp", {"widths": [4, 5]}, {}),
    "bp": ((6,), "mlp", {"widths": [4, 5]}, {}),
    "sff": ((1, 8, 8), "resnet", {"depth": 8, "width": 2}, {"granularity": "layer"}),
    "fg": ((1, 4, 4), "localmixer", {"patches": 2, "channels": 8, "blocks": 2, "groups": 2}, {}),
    "cafo-rand": ((1, 4, 4), "cafo-cnn", {"channels": [2, 3]}, {}),
}


@pytest.mark.parametrize("name", ONE_PASS_CASES)
def test_predict_all_equals_predict_of_each_mode(name):
    shape, arch, args, own = ONE_PASS_CASES[name]
    torch.manual_seed(0)
    t = ALGORITHMS.get(name)(shape, 3, arch, args, {**SGD, **own}).double().train(False)
    x = torch.randn(7, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    every = t.predict_all(x)
    assert list(every) == list(t.prediction_modes)
    for mode, scores in every.items():
        torch.testing.assert_close(scores, t.predict(x, mode), msg=mode)


def test_ff_onepass_head_loss_never_reaches_the_layers():
    x, y = batch()
    y_neg = (y + 1) % 3
    with_head, without = make("ff", [4, 5], onepass_head=True), make("ff", [4, 5], onepass_head=False)
    for t in (with_head, without):
        t.wrong_labels = lambda labels: y_neg
    got, want = step_grads(with_head, x, y), step_grads(without, x, y)
    for k in want:  # every layer parameter moved exactly as without the head
        torch.testing.assert_close(got[k], want[k], msg=k)
    assert got["onepass.weight"].abs().sum() > 0  # while the head itself learned
