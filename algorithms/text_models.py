"""Networks on token ids: the paper's Table 6 IMDB model (an embedding of 50, then one hidden layer of 100).

``embed-mlp`` takes token ids ``(N, L)`` (0 = padding, 1 = unknown word), looks each up in an
embedding, averages the embeddings of the non-padding positions, and continues as an MLP. The
embedding belongs to the first block (``Embedding -> mean -> Linear -> ReLU``), so that an algorithm
with local losses (MF) trains it from block 1's loss alone.

The vocabulary size lives here, not in the dataset, because ``algorithms`` never imports from
``benchmarks``: the IMDB dataset (:mod:`benchmarks.datasets.text`) imports it from here, so that the
dataset's ids and the default embedding always agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn

from .networks import ACTIVATIONS, LayerFactory
from .typed_config import check
from .registry import ARCHITECTURES

PAD_ID = 0  # padding: excluded from the mean
UNKNOWN_ID = 1  # a word outside the vocabulary
# Rows of the IMDB embedding, padding and unknown included: the 9998 most frequent training words.
# 10000 is the usual IMDB cut (Keras' imdb.load_data(num_words=10000), Chollet's book); it keeps
# every word seen in more than a handful of reviews while the embedding stays at 0.5 M parameters.
IMDB_VOCAB_SIZE = 10000


class MeanEmbedding(nn.Module):
    """Token ids (N, L) -> the mean embedding of each row's non-padding tokens (N, dim).

    ``nn.EmbeddingBag(mode="mean", padding_idx=0)`` leaves padding out of the mean (and out of the
    gradient) without materialising the (N, L, dim) embeddings; an all-padding row gives zeros.
    """

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab_size, dim, mode="mean", padding_idx=PAD_ID)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.bag(ids)


@dataclass
class EmbedMLPArgs:
    widths: tuple[int, ...] = (100,)  # the paper's IMDB model: one hidden layer of 100
    embedding_dim: int = 50  # the paper's embedding of 50
    vocab_size: int = IMDB_VOCAB_SIZE  # must cover the dataset's largest token id
    activation: str = "relu"

    def validate(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        check(len(self.widths) >= 1, "embed-mlp needs at least one hidden layer (widths)")
        check(all(w > 0 for w in self.widths), f"every width must be > 0, got {list(self.widths)}")
        check(self.embedding_dim > 0, f"embedding_dim must be > 0, got {self.embedding_dim}")
        check(self.vocab_size > UNKNOWN_ID, f"vocab_size must be > {UNKNOWN_ID} (padding and unknown ids), "
                                             f"got {self.vocab_size}")
        check(self.activation in ACTIVATIONS,
               f"unknown activation {self.activation!r}; choose one of: {', '.join(ACTIVATIONS)}")


@ARCHITECTURES.register("embed-mlp")
class EmbedMLP:
    """Token ids -> mean embedding -> Linear -> activation (block 1) -> further Linear blocks."""

    Args = EmbedMLPArgs
    input_dtype = torch.long  # build_network's dry run, and FF's check that the label cannot be written in

    @staticmethod
    def blocks(args: EmbedMLPArgs, input_shape: tuple[int, ...], layers: LayerFactory) -> list[nn.Module]:
        check(len(input_shape) == 1, f"embed-mlp takes token ids of shape (N, L), got samples of shape "
                                      f"{tuple(input_shape)} (a text dataset such as imdb)")
        act = ACTIVATIONS[args.activation]
        sizes = [args.embedding_dim, *args.widths]
        blocks = []
        for i, (n_in, n_out) in enumerate(pairwise(sizes)):
            parts = [MeanEmbedding(args.vocab_size, args.embedding_dim)] if i == 0 else []
            blocks.append(nn.Sequential(*parts, layers.linear(n_in, n_out), act()))
        return blocks
