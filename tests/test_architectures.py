"""The ``cnn`` and ``lc-mlp`` architectures: the locally connected layer against a masked dense layer,
MF, FA and DFA update rules on a tiny cnn against hand computations, learning the digits, bad arguments.

Update-rule references use float64 and plain SGD, so a parameter's change after one step is exactly
``-lr * gradient`` (as in tests/test_update_rules.py).
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input, conv2d_weight

from algorithms import ALGORITHMS, ConfigError
from algorithms.fa import FALocal2d
from algorithms.local import LocallyConnected2d, same_padding
from benchmarks.run.config import ExperimentConfig
from benchmarks.run.runner import run_experiment

LR = 0.1
SGD = {"optimizer": "sgd", "lr": LR, "momentum": 0.0}
SHAPE = (2, 4, 4)  # a tiny 2-channel 4x4 image
CLASSES = 3


def make(name, arch="cnn", arch_args=None, shape=SHAPE, **hp):
    torch.manual_seed(0)
    args = {"channels": [3, 4]} if arch_args is None else arch_args
    return ALGORITHMS.get(name)(shape, CLASSES, arch, args, {**SGD, **hp}).double()


def batch(n=5, shape=SHAPE):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64), torch.randint(0, CLASSES, (n,), generator=g)


def step_grads(trainer, x, y):
    """Apply one update and return -(change)/lr per parameter, i.e. the gradient that was used."""
    before = {k: v.detach().clone() for k, v in trainer.named_parameters()}
    trainer.update(x, y)
    return {k: (before[k] - v.detach()) / LR for k, v in trainer.named_parameters()}


def output_error(logits, y):
    return (logits.softmax(1) - F.one_hot(y, logits.shape[1]).double()) / len(y)


# -- the locally connected layer ----------------------------------------------------------------

def masked_dense(layer, weight):
    """The dense (C_out*H_out*W_out, C_in*H*W) matrix of ``layer`` built entry by entry from ``weight``:
    unit (o, y, x) sees input (c, y*s + i - top, x*s + j - left) through weight[y*W_out + x, o, (c, i, j)],
    zero everywhere else (and kernel entries that fall on padding connect to nothing)."""
    c_in, h, w = layer.in_shape
    c_out, h_out, w_out = layer.out_shape
    k, s = layer.kernel_size, layer.stride
    left, _, top, _ = layer.pad
    rows, cols, entries = [], [], []
    for o in range(c_out):
        for y in range(h_out):
            for x in range(w_out):
                for c in range(c_in):
                    for i in range(k):
                        for j in range(k):
                            yy, xx = y * s + i - top, x * s + j - left
                            if 0 <= yy < h and 0 <= xx < w:
                                rows.append((o * h_out + y) * w_out + x)
                                cols.append((c * h + yy) * w + xx)
                                entries.append(weight[y * w_out + x, o, (c * k + i) * k + j])
    dense = weight.new_zeros(c_out * h_out * w_out, c_in * h * w)
    return dense.index_put((torch.tensor(rows), torch.tensor(cols)), torch.stack(entries))


LC_CASES = [((2, 5, 4), 3, 1, "same"), ((2, 5, 4), 2, 1, "same"), ((1, 6, 5), 3, 2, "same"),
            ((2, 5, 5), 3, 1, "valid"), ((2, 4, 4), 2, 2, 1)]


@pytest.mark.parametrize("dense", [False, True], ids=["unfold", "dense"])
@pytest.mark.parametrize("in_shape, k, stride, padding", LC_CASES)
def test_locally_connected_equals_masked_dense_layer(in_shape, k, stride, padding, dense):
    torch.manual_seed(0)
    layer = LocallyConnected2d(in_shape, 3, k, stride, padding, dense=dense).double()
    assert layer.dense == dense
    _, h_out, w_out = layer.out_shape
    assert layer.weight.shape == (h_out * w_out, 3, in_shape[0] * k * k)  # one kernel per position: unshared
    x = torch.randn(4, *in_shape, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(4, *layer.out_shape, dtype=torch.float64)
    out = layer(x)
    (out * upstream).sum().backward()

    weight = layer.weight.detach().clone().requires_grad_()
    bias = layer.bias.detach().clone().requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    ref = x_ref.flatten(1) @ masked_dense(layer, weight).T + bias.flatten()
    (ref * upstream.flatten(1)).sum().backward()
    torch.testing.assert_close(out.flatten(1), ref)
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(layer.weight.grad, weight.grad)
    torch.testing.assert_close(layer.bias.grad, bias.grad)
    # padding entries get no gradient, and positions do not share weights
    assert not torch.allclose(layer.weight.grad[0], layer.weight.grad[-1])


@pytest.mark.parametrize("dense", [False, True], ids=["unfold", "dense"])
def test_locally_connected_with_tied_kernels_is_a_convolution(dense):
    torch.manual_seed(0)
    layer = LocallyConnected2d((2, 6, 5), 3, 4, stride=2, dense=dense).double()
    kernel = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(kernel.flatten(1).expand_as(layer.weight))
        layer.bias.zero_()
    assert layer.pad == (1, 2, 1, 1) and layer.out_shape == (3, 3, 3)  # W: 3 zeros, the odd one after
    assert same_padding(5, 2, 1) == (0, 1) and same_padding(32, 16, 1) == (7, 8)
    x = torch.randn(3, 2, 6, 5, dtype=torch.float64)
    torch.testing.assert_close(layer(x), F.conv2d(F.pad(x, layer.pad), kernel, stride=2))


def test_fa_local_layer_sends_error_through_its_feedback():
    torch.manual_seed(0)
    for dense in (False, True):
        layer = FALocal2d((2, 5, 4), 3, 3, dense=dense).double()
        x = torch.randn(4, 2, 5, 4, dtype=torch.float64, requires_grad=True)
        upstream = torch.randn(4, *layer.out_shape, dtype=torch.float64)
        out = layer(x)
        (out * upstream).sum().backward()
        plain = LocallyConnected2d((2, 5, 4), 3, 3, dense=dense).double()
        plain.load_state_dict({k: v for k, v in layer.state_dict().items() if k != "feedback"})
        torch.testing.assert_close(out, plain(x))  # forward is the layer's own
        g = upstream.flatten(1)
        torch.testing.assert_close(x.grad.flatten(1), g @ masked_dense(layer, layer.feedback))
        assert not torch.allclose(x.grad.flatten(1), g @ masked_dense(layer, layer.weight.detach()))
        w_ref = layer.weight.detach().clone().requires_grad_()
        (x.detach().flatten(1) @ masked_dense(layer, w_ref).T * g).sum().backward()
        torch.testing.assert_close(layer.weight.grad, w_ref.grad)  # the weight's own gradient is BP's


def test_lc_mlp_is_an_mlp_of_maps_with_unshared_weights():
    t = ALGORITHMS.get("bp")((3, 32, 32), 10, "lc-mlp", {"kernels": [4, 8, 16]}, {})
    assert t.net.feature_shapes == [(3072,), (3072,), (3072,)]  # stride 1, same padding, 3 units per position
    assert [b[0].weight.numel() for b in t.net.blocks] == [1024 * 3 * 3 * k * k for k in (4, 8, 16)]
    mf = ALGORITHMS.get("mf")((3, 32, 32), 10, "lc-mlp", {}, {"readout": "gap"})
    assert [m.shape for m in mf.projections] == [(10, 3072), (10, 3072)]  # flat blocks: always read out whole


# -- update rules on a tiny cnn -----------------------------------------------------------------

@pytest.mark.parametrize("readout", ["flatten", "gap"])
def test_mf_cnn_step_is_each_blocks_local_cross_entropy(readout):
    t = make("mf", readout=readout)
    t.start_epoch(0, 1)
    x, y = batch()
    want, h = {}, x
    for i, block in enumerate(t.net.blocks):
        block_copy = copy.deepcopy(block)
        m = t.projections[i].detach().clone().requires_grad_()
        a = block_copy(h)
        feature = a.mean((2, 3)) if readout == "gap" else a.flatten(1)
        assert m.shape == (CLASSES, feature.shape[1])
        loss = F.cross_entropy(feature @ m.T, y)
        grads = torch.autograd.grad(loss, [*block_copy.parameters(), m])
        for (name, _), g in zip(block_copy.named_parameters(), grads):
            want[f"net.blocks.{i}.{name}"] = g
        want[f"projections.{i}"] = grads[-1]
        h = a.detach()
    got = step_grads(t, x, y)
    assert set(got) == set(want)
    for k, value in want.items():
        torch.testing.assert_close(got[k], value, msg=k)
    # no gradient reaches an earlier block: with block 2's loss flowing into block 1, block 1's would differ
    t2 = make("mf", readout=readout)
    a1 = t2.net.blocks[0](x)
    a2 = t2.net.blocks[1](a1)
    leaked = torch.autograd.grad(F.cross_entropy(t2.scores(0, a1), y) + F.cross_entropy(t2.scores(1, a2), y),
                                 t2.net.blocks[0][0].weight)[0]
    assert not torch.allclose(leaked, want["net.blocks.0.0.weight"])
    t2.update(x, y)
    torch.testing.assert_close(t2.net.blocks[0][0].weight.grad, want["net.blocks.0.0.weight"])


def test_fa_cnn_lower_conv_input_gradient_uses_feedback_kernel():
    t = make("fa")
    x, y = batch()
    conv0, conv1 = t.net.blocks[0][0], t.net.blocks[1][0]
    assert not torch.allclose(conv1.feedback, conv1.weight)
    captured = {}

    def keep_output(name):
        def hook(module, inputs, out):
            captured[name] = out
            out.register_hook(lambda g: captured.setdefault(f"grad_{name}", g))
        return hook

    conv0.register_forward_hook(keep_output("z0"))
    conv1.register_forward_hook(keep_output("z1"))
    h0 = t.net.blocks[0](x)
    h0.retain_grad()
    F.cross_entropy(t.net.head(t.net.blocks[1](h0)), y).backward()
    g1 = captured["grad_z1"]  # the error at the upper conv's output
    # what reaches the lower block is the upper conv's feedback kernel applied to g1, not its weight
    torch.testing.assert_close(h0.grad, conv2d_input(h0.shape, conv1.feedback, g1, padding=1))
    assert not torch.allclose(h0.grad, conv2d_input(h0.shape, conv1.weight.detach(), g1, padding=1))
    torch.testing.assert_close(conv1.weight.grad, conv2d_weight(h0.detach(), conv1.weight.shape, g1, padding=1))
    # and the lower conv learns from it: back through the 2x2 average pool (each input gets 1/4) and the ReLU
    g0 = h0.grad.repeat_interleave(2, 2).repeat_interleave(2, 3) / 4 * (captured["z0"] > 0)
    torch.testing.assert_close(captured["grad_z0"], g0)
    torch.testing.assert_close(conv0.weight.grad, conv2d_weight(x, conv0.weight.shape, g0, padding=1))
    # update() applies exactly these gradients
    grads = {k: p.grad.clone() for k, p in t.named_parameters()}
    got = step_grads(t, x, y)
    for k, value in grads.items():
        torch.testing.assert_close(got[k], value, msg=k)


def test_dfa_cnn_blocks_receive_projected_error_as_feature_maps():
    t = make("dfa")
    x, y = batch()
    hidden, h = [], x
    for block in t.net.blocks:
        h = block(h).detach()
        hidden.append(h)
    head = t.net.head[1]
    logits = hidden[-1].flatten(1) @ head.weight.T + head.bias
    e = output_error(logits, y)
    want = {"net.head.1.weight": e.T @ hidden[-1].flatten(1), "net.head.1.bias": e.sum(0)}
    inputs = [x, *hidden[:-1]]
    for i, block in enumerate(t.net.blocks):
        injected = (e @ t.feedback(i).T).view(len(x), *t.net.feature_shapes[i])  # B_i e as (C, H, W) maps
        assert t.feedback(i).shape[0] == hidden[i][0].numel()
        block_copy = copy.deepcopy(block)
        grads = torch.autograd.grad(block_copy(inputs[i]), list(block_copy.parameters()), injected)
        for (name, _), g in zip(block_copy.named_parameters(), grads):
            want[f"net.blocks.{i}.{name}"] = g
    got = step_grads(t, x, y)
    assert set(got) == set(want)
    for k, value in want.items():
        torch.testing.assert_close(got[k], value, msg=k)


# -- learning the digits (8x8, 1 channel) -------------------------------------------------------

# 1293 training images, 5 epochs, batch 64; floors below what the runs reach (cnn, seeds 0-2: bp 93-95 %,
# fa 84-85 %, dfa 87-88 %, mf 94-96 %; lc-mlp: bp 94-96 %, mf 90-93 %, fa and dfa 88-90 % at seeds 0-1) and far
# above chance. The 8x8 digits leave a 16x32-channel cnn 2x2 maps after two poolings; it needs lr 1e-2 to
# learn them in 100 steps.
LEARNS = {("bp", "cnn"): 85.0, ("fa", "cnn"): 75.0, ("dfa", "cnn"): 75.0, ("mf", "cnn"): 85.0,
          ("bp", "lc-mlp"): 85.0, ("fa", "lc-mlp"): 75.0, ("dfa", "lc-mlp"): 75.0, ("mf", "lc-mlp"): 85.0}
DIGITS = {"cnn": ({"channels": [16, 32]}, {"lr": 0.01}), "lc-mlp": ({"kernels": [4, 8]}, {})}


@pytest.fixture
def one_thread():
    """These networks are too small to gain from a second thread, and one thread does not stall when
    other processes share the two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("algorithm, arch", sorted(LEARNS))
def test_learns_digits(algorithm, arch, results_dir, one_thread):
    arch_args, hparams = DIGITS[arch]
    cfg = ExperimentConfig(algorithm=algorithm, dataset="digits", arch=arch, arch_args=arch_args, hparams=hparams,
                           epochs=5, quiet=True, results_dir=results_dir)
    summary = run_experiment(cfg).summary
    assert summary["status"] == "completed"
    assert summary["test_acc"] >= LEARNS[(algorithm, arch)], summary["selected"]


# -- bad arguments ------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm, arch, args, shape, fragment", [
    ("bp", "cnn", {"channels": []}, (1, 8, 8), "at least one conv block"),
    ("bp", "cnn", {"channels": [8, 0]}, (1, 8, 8), "channel count must be > 0"),
    ("bp", "cnn", {"kernel_size": 2}, (3, 32, 32), "kernel_size must be odd"),
    ("bp", "cnn", {"pool": 0}, (3, 32, 32), "pool must be >= 1"),
    ("mf", "cnn", {}, (1, 8, 8), "the input must be at least 16x16, got 8x8"),
    ("bp", "cnn", {}, (30,), "needs image input"),
    ("bp", "cnn", {"widths": [10]}, (1, 8, 8), "unknown cnn architecture key"),
    ("bp", "lc-mlp", {"kernels": []}, (1, 8, 8), "at least one hidden layer"),
    ("mf", "lc-mlp", {"kernels": [4, 8, 16]}, (1, 8, 8), "layer 3's kernel 16 is larger than its 8x8 input"),
    ("bp", "lc-mlp", {"kernels": [4, 8], "channels": [3, 3, 3]}, (3, 32, 32), "one number or one per kernel"),
    ("bp", "lc-mlp", {"padding": "full"}, (3, 32, 32), "padding must be"),
    ("bp", "lc-mlp", {"stride": 0}, (3, 32, 32), "stride must be >= 1"),
    ("bp", "lc-mlp", {"kernels": [4, "x"]}, (3, 32, 32), "lc-mlp architecture kernels must be a list of integers, got [4, 'x']"),
    ("bp", "lc-mlp", {"kernels": 4}, (3, 32, 32), "lc-mlp architecture kernels must be a list of integers, got 4"),
    ("bp", "cnn", {"kernel_size": 2.5}, (3, 32, 32), "cnn architecture kernel_size must be an integer, got 2.5"),
    ("bp", "lc-mlp", {}, (64,), "needs image input"),
    ("ff", "cnn", {}, (3, 32, 32), "ff trains MLPs only"),
    ("ff", "lc-mlp", {}, (3, 32, 32), "ff trains MLPs only"),
])
def test_bad_arguments_are_one_line_config_errors(algorithm, arch, args, shape, fragment):
    with pytest.raises(ConfigError) as info:
        ALGORITHMS.get(algorithm)(shape, 10, arch, args, {})
    message = str(info.value)
    assert fragment in message and "\n" not in message, message
