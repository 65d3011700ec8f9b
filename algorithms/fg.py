"""Forward gradient with local losses (FG; Ren, Kornblith, Liao, Hinton, ICLR 2023, arXiv 2210.03310).

The forward gradient of a loss L at parameters (or activations) z in a random direction v ~ N(0, I) is

    g = (grad L . v) v,

an unbiased estimate of grad L; the directional derivative ``grad L . v`` comes from one forward-mode
pass (``torch.func.jvp``), so no backward pass runs through the network.

Local greedy losses: every block i has a linear head on its output and learns from that head's
cross-entropy alone, its input detached (blocks are trained one after the other on each batch, as MF
does). On LocalMixer (``algorithms/mixer.py``) a block has one loss per patch p and channel group g:
replica (p, g) of the head reads the block's output averaged over patches, where only patch p's group-g
channels carry a derivative (the others enter by value only), so every loss depends on few activations.
Their values are equal; the block's loss is their sum, averaged over the batch, whose gradient equals
that of the plain cross-entropy of the patch-mean head. An MLP block has one loss (one patch, one group).
``head_norm`` layer-normalises the head's input, as the paper normalises before every read-out.

Perturbation targets (``perturb``):

* ``weights`` (FG-W, the baseline): v over every parameter of the block and its head; one jvp of the
  block's loss; every parameter's gradient is ``d v``. Its variance grows with the number of parameters.
* ``activities`` (FG-A, the paper's method): v over the normalised pre-activations of every linear op of
  the block (its *sites*, ``fg_sites()`` of a block; an MLP block's Linear layers otherwise) and over the
  head's logits; one jvp gives the directional derivative of every local loss (shape N x P x G); each
  site's output position is paired with the losses it can change (the site's *route*), giving the
  estimate ``g_z`` of the loss's gradient at that output. The site's weight gradient follows from
  ``g_z`` by a backward through that site alone (its linear op and normalisation): the local backward the
  paper allows inside a linear op. Its variance grows with the activations a loss depends on, which local
  losses keep small.

On an MLP, ``groups`` splits every block's units into groups with a loss each (as LocalMixer's channel
groups): unit c's pre-activation then reaches only its group's loss. ``input_norm`` layer-normalises each
block's input after the first. ``directions`` averages that many independent estimates per step (the
paper uses one).
Prediction: ``last`` is the last block's head on its patch-mean output, ``blockK`` block K's head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp

from .base import ConfigError, Trainer, TrainerHParams, make_optimizer
from .typed_config import check
from .registry import ALGORITHMS

PERTURB = ("weights", "activities")
Route = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class FGHParams(TrainerHParams):
    perturb: str = "activities"  # the paper's FG-A; "weights" is FG-W, the baseline it improves on
    directions: int = 1  # random directions averaged per step; the paper uses one forward-gradient pass
    head_norm: bool = True  # LayerNorm before each local head, as the paper normalises every read-out
    # MLP blocks: units split into this many groups, each with its own local loss (the paper's group-wise
    # losses; LocalMixer blocks bring their own groups). 1: one loss a block. More groups: each perturbation
    # is paired with fewer others, so less variance (2x1000 MLP, MNIST subset: see benchmarks/specs/fg.yaml)
    groups: int = 1
    # LayerNorm (per sample and patch, no affine) on every block's input after the first: the paper's
    # LayerNorms keep each local learner's input at one scale (2x1000 MLP, 2000 MNIST images, 3 epochs,
    # groups 50, seed 0: the second block's head at 36 % test without, 49 % with)
    input_norm: bool = True

    def validate(self) -> None:
        super().validate()
        check(self.perturb in PERTURB, f"unknown perturb {self.perturb!r}; choose one of: {', '.join(PERTURB)}")
        check(isinstance(self.directions, int) and self.directions >= 1,
               f"directions must be a whole number >= 1, got {self.directions!r}")
        check(isinstance(self.groups, int) and self.groups >= 1, f"groups must be a whole number >= 1, got {self.groups!r}")


def route_sample(d: torch.Tensor) -> torch.Tensor:
    """Any block: a sample's activations may reach every one of its losses (none of another sample's)."""
    return d.sum((1, 2))


def route_same(d: torch.Tensor) -> torch.Tensor:
    """The head's logits of replica (p, g) reach only loss (p, g)."""
    return d


def route_units(width: int, groups: int) -> Route:
    """An MLP block's Linear output (N, C) before an elementwise activation: unit c reaches its group's loss."""
    return lambda d: d[:, 0].repeat_interleave(width // groups, dim=1)


def plain_mlp_block(block: nn.Module) -> bool:
    """Flatten / one Linear / elementwise activations only: a Linear output unit reaches only its own output."""
    kinds = [type(m) for m in block.children()] if isinstance(block, nn.Sequential) else [None]
    linears = sum(k is nn.Linear for k in kinds)
    elementwise = (nn.Flatten, nn.ReLU, nn.Tanh, nn.GELU, nn.Sigmoid)
    return linears == 1 and all(k is nn.Linear or (k is not None and issubclass(k, elementwise)) for k in kinds)


@ALGORITHMS.register("fg")
class ForwardGradient(Trainer):
    HParams = FGHParams
    uses_head = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        shapes = self.net.feature_shapes
        if any(len(s) not in (1, 2) for s in shapes):
            raise ConfigError(f"fg's local heads read flat (features) or (patches, channels) block outputs; this "
                              f"architecture's blocks give {shapes[0]}: use mlp or localmixer")
        self.heads = nn.ModuleList(nn.Linear(s[-1], self.num_classes) for s in shapes)
        groups = [self._groups(block, s[-1]) for block, s in zip(self.net.blocks, shapes)]
        for i, (g, s) in enumerate(zip(groups, shapes)):  # mask[g, c]: channel c belongs to group g
            self.register_buffer(f"mask{i}", torch.eye(g).repeat_interleave(s[-1] // g, dim=1))
        self.sites = [self._sites(block, head, g) for block, head, g in zip(self.net.blocks, self.heads, groups)]
        self.optimizers = [make_optimizer([*b.parameters(), *h.parameters()], self.hp)
                           for b, h in zip(self.net.blocks, self.heads)]
        self.prediction_modes = ("last", *(f"block{i + 1}" for i in range(len(shapes))))
        self._state: dict | None = None  # set while a jvp perturbs the sites (read by the hooks)
        self._shapes: dict = {}
        self.phase = "all blocks"

    # -- sites -----------------------------------------------------------------------------------
    def _groups(self, block: nn.Module, width: int) -> int:
        if hasattr(block, "groups"):  # LocalMixer: the architecture's groups
            return block.groups
        if self.hp.groups > 1:
            check(plain_mlp_block(block), "fg's groups split MLP blocks (one Linear and an activation); this "
                                           "architecture's blocks are not: use groups=1")
            check(width % self.hp.groups == 0, f"fg's groups ({self.hp.groups}) must divide the width {width}")
        return self.hp.groups

    def _sites(self, block: nn.Module, head: nn.Module, groups: int) -> list[tuple[nn.Module, Route]]:
        if hasattr(block, "fg_sites"):
            sites = block.fg_sites()
        else:
            sites = [(m, route_units(m.out_features, groups) if plain_mlp_block(block) else route_sample)
                     for m in block.modules() if isinstance(m, nn.Linear)]
        sites = [*sites, (head, route_same)]
        covered = {id(p) for m, _ in sites for p in m.parameters()}
        if self.hp.perturb == "activities" and any(id(p) not in covered for p in block.parameters()):
            raise ConfigError("fg's activity perturbation needs every weight of a block in a linear layer "
                              "(or a block with fg_sites()): use mlp or localmixer, or perturb=weights")
        for k, (module, _) in enumerate(sites):
            module.register_forward_hook(lambda m, a, out, k=k: self._hook(k, a, out))
        return sites

    def _hook(self, k: int, args: tuple, out: torch.Tensor):
        state = self._state
        if state is None:
            return None
        if "shapes" in state:  # finding the perturbations' shapes
            state["shapes"][k] = out.shape
            return None
        state["inputs"][k] = args[0]
        return out + state["eps"][k]

    def _site_shapes(self, i: int, x: torch.Tensor, y: torch.Tensor) -> list[torch.Size]:
        key = (i, tuple(x.shape))
        if key not in self._shapes:
            self._state = {"shapes": {}}
            try:
                with torch.no_grad():
                    self.local_losses(i, self.net.blocks[i](x), y)
                found = self._state["shapes"]
            finally:
                self._state = None
            self._shapes[key] = [found[k] for k in range(len(self.sites[i]))]
        return self._shapes[key]

    # -- the local losses ------------------------------------------------------------------------
    def aggregate(self, i: int, out: torch.Tensor) -> torch.Tensor:
        """(N, P, G, C): replica (p, g) of the patch-mean, differentiable only in patch p's group-g channels."""
        y = out if out.dim() == 3 else out[:, None, :]
        n, p, c = y.shape
        mask = getattr(self, f"mask{i}")
        own = ((y - y.detach()) / p)[:, :, None, :] * mask  # value 0, derivative of the own slice only
        agg = y.mean(1).detach()[:, None, None, :] + own
        return F.layer_norm(agg, (c,)) if self.hp.head_norm else agg

    def local_losses(self, i: int, out: torch.Tensor, y: torch.Tensor, head: Callable | None = None) -> torch.Tensor:
        """Block i's local cross-entropies, (N, P, G)."""
        logits = (head or self.heads[i])(self.aggregate(i, out))
        n, p, g, k = logits.shape
        target = y[:, None, None].expand(n, p, g).reshape(-1)
        return F.cross_entropy(logits.reshape(-1, k), target, reduction="none").reshape(n, p, g)

    # -- the estimators --------------------------------------------------------------------------
    def estimate(self, i: int, x: torch.Tensor, y: torch.Tensor):
        """Forward-gradient estimate of block i's loss gradient: ``(grads by name, loss, block output)``;
        names are ``block.<param>`` and ``head.<param>``. No backward pass through the network."""
        est = self._weights if self.hp.perturb == "weights" else self._activities
        total: dict[str, torch.Tensor] = {}
        for _ in range(self.hp.directions):
            grads, loss, out = est(i, x.detach(), y)
            for name, g in grads.items():
                total[name] = total[name] + g if name in total else g
        return {k: v / self.hp.directions for k, v in total.items()}, loss, out

    def _named(self, i: int) -> dict[str, nn.Parameter]:
        return {**{f"block.{k}": p for k, p in self.net.blocks[i].named_parameters()},
                **{f"head.{k}": p for k, p in self.heads[i].named_parameters()}}

    @torch.no_grad()
    def _weights(self, i: int, x: torch.Tensor, y: torch.Tensor):
        block, head = self.net.blocks[i], self.heads[i]
        pb = {k: p.detach() for k, p in block.named_parameters()}
        ph = {k: p.detach() for k, p in head.named_parameters()}
        vb = {k: torch.randn_like(p) for k, p in pb.items()}
        vh = {k: torch.randn_like(p) for k, p in ph.items()}

        def loss_of(pb, ph):
            out = functional_call(block, pb, (x,))
            losses = self.local_losses(i, out, y, head=lambda a: functional_call(head, ph, (a,)))
            return losses.sum() / len(y), (out, losses)

        _, d, (out, losses) = jvp(loss_of, (pb, ph), (vb, vh), has_aux=True)
        grads = {**{f"block.{k}": d * v for k, v in vb.items()}, **{f"head.{k}": d * v for k, v in vh.items()}}
        return grads, losses.mean(), out

    def _activities(self, i: int, x: torch.Tensor, y: torch.Tensor):
        block, sites = self.net.blocks[i], self.sites[i]
        shapes = self._site_shapes(i, x, y)
        eps = tuple(x.new_zeros(s) for s in shapes)
        directions = tuple(torch.randn_like(e) for e in eps)

        def losses_of(*eps):
            self._state = {"eps": eps, "inputs": {}}
            out = block(x)
            return self.local_losses(i, out, y), (out, self._state["inputs"])

        try:
            with torch.no_grad():
                losses, d, (out, inputs) = jvp(losses_of, eps, directions, has_aux=True)
        finally:
            self._state = None
        grads: dict[str, torch.Tensor] = {}
        names = {id(p): name for name, p in self._named(i).items()}
        for k, ((module, route), u) in enumerate(zip(sites, directions)):
            r = route(d)
            g_out = r.reshape(*r.shape, *[1] * (u.dim() - r.dim())) * u / len(y)  # d(mean loss)/d(site output)
            params = list(module.parameters())
            with torch.enable_grad():  # the local backward: through this site's linear op and norm only
                site_grads = torch.autograd.grad(module(inputs[k].detach()), params, g_out)
            for p, g in zip(params, site_grads):
                grads[names[id(p)]] = grads[names[id(p)]] + g if names[id(p)] in grads else g
        return grads, losses.mean(), out

    # -- the interface ---------------------------------------------------------------------------
    def update(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Block by block: the estimate of the block's local-loss gradient, then its step; the next block
        reads this block's output as computed before the step (as in MF)."""
        losses, h = {}, x
        for i in range(len(self.net.blocks)):
            grads, loss, h = self.estimate(i, self.block_input(i, h), y)
            self.optimizers[i].zero_grad(set_to_none=True)
            for name, p in self._named(i).items():
                p.grad = grads[name]
            self.optimizers[i].step()
            losses[f"loss_block{i + 1}"] = loss
        losses["loss"] = sum(losses.values()) / len(self.net.blocks)
        return losses

    def block_input(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """What block i reads: the previous block's output, layer-normalised over its last dimension."""
        return F.layer_norm(h, h.shape[-1:]) if self.hp.input_norm and i > 0 else h

    def _depth(self, mode: str) -> int:
        return len(self.net.blocks) if mode == "last" else int(mode[5:])

    def _outputs(self, x: torch.Tensor, depth: int | None = None):
        """Each block's output in turn (a generator), every block reading its normalised input."""
        h = x
        for i, block in enumerate(self.net.blocks[:depth]):
            h = block(self.block_input(i, h))
            yield h

    def head_scores(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """Block i's local head on its output: the mean over patches, optionally layer-normalised."""
        h = h if h.dim() == 3 else h[:, None, :]
        h = h.mean(1)
        return self.heads[i](F.layer_norm(h, h.shape[1:]) if self.hp.head_norm else h)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        depth = self._depth(self._mode(mode))
        for h in self._outputs(x, depth):
            pass
        return self.head_scores(depth - 1, h)

    @torch.no_grad()
    def predict_all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every prediction mode from one forward pass through the blocks."""
        out = {f"block{i + 1}": self.head_scores(i, h) for i, h in enumerate(self._outputs(x))}
        out["last"] = out[f"block{len(self.net.blocks)}"]
        return {mode: out[mode] for mode in self.prediction_modes}

    def inference_parameters(self, mode: str | None = None) -> int:
        depth = self._depth(self._mode(mode))
        used = [*self.net.blocks[:depth].parameters(), *self.heads[depth - 1].parameters()]
        return sum(p.numel() for p in used)
