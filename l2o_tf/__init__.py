"""l2o-tf: learned optimizers (L2O-DM, RNNprop, L2O-Scale) in TensorFlow 2 / Keras 3, after Chen et al. (NeurIPS 2020).

Submodules load on first use (`l2o_tf.networks.load(...)`), so the command-line layer can check flags and data
before paying for TensorFlow's import.
"""
import importlib

_SUBMODULES = ("config", "curriculum", "datasets", "distribute", "errors", "evaluate", "fileio", "guards",
               "imitation", "keras_optimizer", "keras_step", "meta", "models", "networks", "optimizers",
               "original_pickle", "problems", "rules", "seeding", "self_improving", "training")
# public names defined in a submodule: name -> module
_EXPORTS = {"load": "models", "LearnedOptimizer": "keras_optimizer", "GuardedModel": "keras_optimizer"}


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"l2o_tf.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"l2o_tf.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'l2o_tf' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES) + list(_EXPORTS))
