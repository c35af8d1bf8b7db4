"""l2o-tf: learned optimizers (L2O-DM, RNNprop) in TensorFlow 2 / Keras 3, after Chen et al. (NeurIPS 2020).

Submodules load on first use (`l2o_tf.networks.load(...)`), so the command-line layer can check flags and data
before paying for TensorFlow's import.
"""
import importlib

_SUBMODULES = ("networks", "optimizers", "problems", "datasets", "meta", "curriculum", "imitation")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"l2o_tf.{name}")
    raise AttributeError(f"module 'l2o_tf' has no attribute {name!r}")
