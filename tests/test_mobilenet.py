"""The mobilenetv3 architecture (MobileNetV3-Small adapted to 32x32): shapes, blocks and their parts, the width
setting, SFF and MF updates block by block, bad settings. Tiny widths and a batch of 4, so it runs in seconds.

Updates use plain SGD in float64, as tests/test_sff.py does.
"""

import pytest
import torch

from algorithms import ALGORITHMS, ConfigError
from algorithms.mobilenet import InvertedResidual
from algorithms.sff import sff_loss

SGD = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.0}
CLASSES = 3
SHAPE = (3, 16, 16)  # 16x16: the three halvings leave 2x2 maps, enough for batch statistics of 4 images
TINY = {"width": 0.25}  # 8-24 channels in the blocks


def make(name, shape=SHAPE, args=TINY, **hp):
    torch.manual_seed(0)
    return ALGORITHMS.get(name)(shape, CLASSES, "mobilenetv3", args, {**SGD, **hp}).double().train()


def batch(n=4, shape=SHAPE):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64), torch.randint(0, CLASSES, (n,), generator=g)


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("shape, last", [((3, 32, 32), (144, 4, 4)), ((1, 28, 28), (144, 4, 4))])
def test_output_shape_and_blocks(shape, last):
    t = ALGORITHMS.get("bp")(shape, 10, "mobilenetv3", TINY, {}).train()
    assert t.net(torch.randn(4, *shape)).shape == (4, 10)
    blocks = t.net.blocks
    assert len(blocks) == 13  # the stem, 11 inverted residual blocks, the last 1x1 conv
    assert all(isinstance(b, InvertedResidual) for b in blocks[1:12])
    shapes = t.net.feature_shapes
    assert [b.residual for b in blocks[1:12]] == [shapes[i] == shapes[i + 1] for i in range(11)]  # shape kept
    sides = [s[1] for s in t.net.feature_shapes]
    assert sides[:3] == [shape[1]] * 2 + [(shape[1] + 1) // 2]  # stride-1 stem and first block, then halvings
    assert t.net.feature_shapes[-1] == last


def test_width_sets_the_parameter_count_and_width_one_is_mobilenetv3_small():
    counts = [count(ALGORITHMS.get("bp")((3, 32, 32), 10, "mobilenetv3", {"width": w}, {})) for w in (0.25, 0.5, 1.0)]
    assert counts[0] < counts[1] < counts[2]
    full = ALGORITHMS.get("bp")((3, 32, 32), 1000, "mobilenetv3", {}, {})
    assert [b.residual for b in full.net.blocks[1:12]] == [True, False, True, False, True, True, False, True,
                                                           False, True, True]  # Table 2's shape-keeping blocks
    assert full.net.feature_shapes[-1] == (576, 4, 4)
    assert count(full) == pytest.approx(2.5e6, rel=0.03)  # the paper's Table 3: 2.5M parameters, 1000 classes


def test_parts_split_a_block_into_its_convs_and_sff_layer_units_cover_every_parameter_once():
    layer, block = make("sff", granularity="layer"), make("sff", granularity="block")
    assert len(block.units) == 13
    assert len(layer.units) == 1 + 2 + 10 * 3 + 1  # the first block has no expansion (16 -> 16 at width 1)
    for t in (layer, block):
        ids = [id(p) for u in t.units for p in u.modules.parameters()]
        assert sorted(ids) == sorted(id(p) for p in t.net.blocks.parameters())
    # the parts, chained, are the block
    b = layer.net.blocks[3]
    x = torch.randn(2, *layer.net.feature_shapes[2], dtype=torch.float64)
    h = x
    for _, f in b.parts():
        h = f(x, h)
    torch.testing.assert_close(h, b(x))


def test_identity_shortcut_carries_the_block_input():
    t = make("bp")
    b = t.net.blocks[3]  # stride 1, 8 -> 8 channels
    assert b.residual
    x = torch.randn(2, *t.net.feature_shapes[2], dtype=torch.float64)
    with torch.no_grad():
        b.project[1].weight.zero_()  # projection BN scale 0 and shift 0: only the shortcut remains
        b.project[1].bias.zero_()
    torch.testing.assert_close(b(x), x)


@pytest.mark.parametrize("granularity", ["layer", "block"])
def test_no_sff_gradient_crosses_a_unit_boundary(granularity):
    t = make("sff", granularity=granularity)
    x, y = batch()
    for i, a in enumerate(t._outputs(x)):
        loss = sff_loss(t.goodness(i, a), y)
        mine = {id(p) for p in [*t.units[i].modules.parameters(), *t.aux[i].parameters()]}
        others = [p for p in t.parameters() if id(p) not in mine]
        grads = torch.autograd.grad(loss, others, allow_unused=True)
        assert all(g is None or not g.any() for g in grads), f"unit {i + 1}'s loss reached another unit"


def changes(t, readouts):
    """One update; every block and readout learns, and only parameters (and BN statistics) change."""
    x, y = batch()
    x0 = x.clone()
    before = {k: v.clone() for k, v in t.state_dict().items()}
    losses = t.update(x, y)
    after = t.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    params = {k for k, _ in t.named_parameters()}
    stats = {k for k in before if k.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")}
    assert changed - params <= stats and torch.equal(x, x0)
    assert all(torch.isfinite(v).all() for v in after.values()) and torch.isfinite(losses["loss"])
    for i in range(len(t.net.blocks)):
        assert any(k.startswith(f"net.blocks.{i}.") for k in changed & params), f"block {i + 1} did not learn"
    assert all(any(k.startswith(f"{readouts}.{i}") for k in changed) for i in range(len(t.net.blocks)))
    assert not any(k.startswith("net.head") for k in before)  # MF and SFF read blocks out, no head


def test_one_sff_update_changes_every_block_and_only_parameters():
    changes(make("sff", granularity="block"), "aux")


def test_one_mf_update_changes_every_block_and_only_parameters():
    changes(make("mf", readout="gap"), "projections")


def test_bp_mf_sff_and_dfa_train_the_same_blocks():
    shape = (3, 32, 32)
    trainers = [ALGORITHMS.get(name)(shape, 10, "mobilenetv3", {"width": 0.1}, hp).train()
                for name, hp in [("bp", {}), ("mf", {"readout": "gap"}), ("sff", {}), ("dfa", {})]]
    assert len({count(t.net.blocks) for t in trainers}) == 1
    x, y = torch.randn(4, *shape), torch.randint(0, 10, (4,))
    for t in trainers:
        assert torch.isfinite(t.update(x, y)["loss"])
        assert t.predict(x).shape == (4, 10)


@pytest.mark.parametrize("name, shape, args, fragment", [
    ("bp", SHAPE, {"depth": 18}, "unknown mobilenetv3 architecture key(s) ['depth']"),
    ("bp", SHAPE, {"width": 0}, "width must be a number > 0"),
    ("bp", SHAPE, {"width": -0.5}, "width must be a number > 0"),
    ("bp", SHAPE, {"width": "wide"}, "width must be"),
    ("bp", (3, 4, 4), {}, "must be at least 8x8"),
    ("bp", (64,), {}, "needs image input"),
    ("fa", SHAPE, {}, "no feedback-alignment version"),
])
def test_bad_settings_are_one_line_config_errors(name, shape, args, fragment):
    with pytest.raises(ConfigError) as info:
        ALGORITHMS.get(name)(shape, 10, "mobilenetv3", args, {})
    assert fragment in str(info.value) and "\n" not in str(info.value)
