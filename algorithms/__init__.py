"""Backpropagation-free training algorithms behind one trainer interface.

``ALGORITHMS`` maps a name to a trainer class; importing this package registers every algorithm
and architecture. See :mod:`algorithms.base` for the interface.
"""

from . import bp, dfa, fa, ff, mf, networks  # noqa: F401  (registration side effects)
from . import cafo  # noqa: F401  (registers cafo-rand, cafo-dfa and the cafo-cnn architecture)
from . import text_models  # noqa: F401  (registers the embed-mlp architecture on token ids)
from . import fg, mixer, resnet, sff  # noqa: F401  (forward gradient, LocalMixer, resnet, Scalable Forward-Forward)
from . import mobilenet  # noqa: F401  (registers the mobilenetv3 architecture)
from . import bp_ds, mf_joint  # noqa: F401  (the BP -> MF ablation ladder's rungs bp-ds and mf-joint)
from .base import Trainer, TrainerHParams
from .typed_config import ConfigError
from .registry import ALGORITHMS, ARCHITECTURES, UnknownNameError

__all__ = ["ALGORITHMS", "ARCHITECTURES", "ConfigError", "Trainer", "TrainerHParams", "UnknownNameError"]
