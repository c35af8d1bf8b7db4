"""L2O-Scale: the hierarchical (3-level GRU) learned optimizer of the original code.

    opt = l2o_scale.load("scale_smoke")         # the shipped 6-step smoke test, or a checkpoint directory or prefix
    state = opt.initial_state(params)           # params: list of tensors in problem order
    deltas, state = opt.step(gradients, state)  # new params = params + deltas

Submodules load on first use, so the command-line layer can check flags before importing TensorFlow.
"""
import importlib

_SUBMODULES = ("checkpoint", "hierarchical_rnn", "metarun", "metatest")
# public names defined in a submodule: name -> module
_EXPORTS = {"load": "checkpoint", "save": "checkpoint", "HierarchicalRNN": "hierarchical_rnn",
            "BiasGRUCell": "hierarchical_rnn"}


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"l2o_scale.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"l2o_scale.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'l2o_scale' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES) + list(_EXPORTS))
