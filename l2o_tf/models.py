"""One loader for every learned optimizer: `l2o_tf.load(name_or_path)`.

A name of a model shipped in the package (the original trained L2O-DM and RNNprop models, `SHIPPED`), a weights
file (`cw.l2l-N`, `rp.l2l-N`, ours or the original's), a directory holding one, or an L2O-Scale TensorFlow
checkpoint (a directory with a `checkpoint` file, or a `model.ckpt-N` prefix), handed to `l2o_scale.load`.
Every answer is an update rule of `l2o_tf.rules`, ready for `meta.Runner`, `keras_step` or `LearnedOptimizer`.
"""
import glob
import importlib
import importlib.resources
import os

from l2o_tf import errors

SHIPPED = ("dm", "dm_aug", "dm_cl", "dm_il", "dm_cl_il", "rnnprop", "rnnprop_cl_il")


class ModelNotFoundError(errors.L2OError, ValueError):
    """No learned optimizer under that name or path."""


def load(name_or_path, **overrides):
    """The learned optimizer `name_or_path` names; `overrides` replace config entries of a DM/RNNprop cell."""
    name_or_path = os.fspath(name_or_path)
    if name_or_path in SHIPPED:
        return _load_weights(shipped_path(name_or_path), overrides)
    path = name_or_path
    if os.path.isdir(path):
        weights = sorted(glob.glob(os.path.join(path, "cw.l2l-0")) + glob.glob(os.path.join(path, "rp.l2l-0")))
        if len(weights) > 1:
            raise ModelNotFoundError(f"{path} holds both an L2O-DM and an RNNprop model; pass the file itself")
        if weights:
            return _load_weights(weights[0], overrides)
        if os.path.exists(os.path.join(path, "checkpoint")):
            return _load_scale(path, overrides)
        raise ModelNotFoundError(f"{path}: no cw.l2l-0, rp.l2l-0 or TensorFlow checkpoint in this directory")
    if os.path.exists(path + ".index") or path.endswith(".index"):
        return _load_scale(path[:-len(".index")] if path.endswith(".index") else path, overrides)
    if os.path.isfile(path):
        return _load_weights(path, overrides)
    raise ModelNotFoundError(f"{path!r} is neither a shipped model ({', '.join(SHIPPED)}) nor an existing file "
                             "or directory")


def shipped_path(name):
    """The file of a shipped model (a real path: editable and regular installs keep package data as files)."""
    if name not in SHIPPED:
        raise ModelNotFoundError(f"no shipped model {name!r}: expected one of {', '.join(SHIPPED)}")
    key = "rp" if name.startswith("rnnprop") else "cw"
    return str(importlib.resources.files("l2o_tf").joinpath("pretrained", name, f"{key}.l2l-0"))


def _load_weights(path, overrides):
    from l2o_tf import networks  # imports TensorFlow
    return networks.load(path, **overrides)


def _load_scale(path, overrides):
    scale = importlib.import_module("l2o_scale")
    if not hasattr(scale, "load"):
        raise ModelNotFoundError(f"{path} is a TensorFlow checkpoint (L2O-Scale), but this installation's l2o_scale "
                                 "has no load() yet")
    return scale.load(path, **overrides)
