"""One loader for every learned optimizer: `l2o_tf.load(name_or_path)`.

A name of a model shipped in the package (the original trained L2O-DM and RNNprop models, `SHIPPED`, and the
original L2O-Scale code's smoke-test checkpoint, `SHIPPED_SCALE`), a weights file (`cw.l2l-N`, `rp.l2l-N`, ours or
the original's), a directory holding one, or an L2O-Scale TensorFlow checkpoint (a directory with a `checkpoint`
file, or a `model.ckpt-N` prefix), handed to `l2o_scale.load`.
Every answer is an update rule of `l2o_tf.rules`, ready for `meta.Runner`, `keras_step` or `LearnedOptimizer`.
"""
import glob
import importlib.resources
import os

from l2o_tf import errors

SHIPPED = ("dm", "dm_aug", "dm_cl", "dm_il", "dm_cl_il", "rnnprop", "rnnprop_cl_il")
# A 6-step smoke test of the original L2O-Scale code (meta-parameters ~ their random init), not a trained optimizer;
# kept apart from SHIPPED, the trained models that `l2o_tf.reproduce --originals` evaluates.
SHIPPED_SCALE = ("scale_smoke",)


class ModelNotFoundError(errors.L2OError, ValueError):
    """No learned optimizer under that name or path."""


def load(name_or_path, **overrides):
    """The learned optimizer `name_or_path` names; `overrides` replace config entries of a DM/RNNprop cell."""
    kind, path = resolve(name_or_path)
    return _load_scale(path, overrides) if kind == "scale" else _load_weights(path, overrides)


def resolve(name_or_path):
    """("weights", file) for an L2O-DM/RNNprop weights file, ("scale", checkpoint) for an L2O-Scale one: what
    `name_or_path` names, found without TensorFlow (the entry points check `--path` with it)."""
    name_or_path = os.fspath(name_or_path)
    if name_or_path in SHIPPED:
        return "weights", shipped_path(name_or_path)
    if name_or_path in SHIPPED_SCALE:
        return "scale", shipped_path(name_or_path)
    path = name_or_path
    if os.path.isdir(path):
        weights = sorted(glob.glob(os.path.join(path, "cw.l2l-0")) + glob.glob(os.path.join(path, "rp.l2l-0")))
        if len(weights) > 1:
            raise ModelNotFoundError(f"{path} holds both an L2O-DM and an RNNprop model; pass the file itself")
        if weights:
            return "weights", weights[0]
        if os.path.exists(os.path.join(path, "checkpoint")):
            return "scale", path
        raise ModelNotFoundError(f"{path}: no cw.l2l-0, rp.l2l-0 or TensorFlow checkpoint in this directory")
    if os.path.exists(path + ".index") or path.endswith(".index"):
        return "scale", path[:-len(".index")] if path.endswith(".index") else path
    if os.path.isfile(path):
        return "weights", path
    raise ModelNotFoundError(f"{path!r} is neither a shipped model ({shipped_names()}) nor an existing file or "
                             "directory")


def shipped_path(name):
    """Where a shipped model lies: the weights file of a DM/RNNprop model, the checkpoint directory of an L2O-Scale
    one (real paths: editable and regular installs keep package data as files)."""
    if name not in SHIPPED + SHIPPED_SCALE:
        raise ModelNotFoundError(f"no shipped model {name!r}: expected one of {shipped_names()}")
    directory = importlib.resources.files("l2o_tf").joinpath("pretrained", name)
    if name in SHIPPED_SCALE:
        return str(directory)
    return str(directory.joinpath(("rp" if name.startswith("rnnprop") else "cw") + ".l2l-0"))


def shipped_names():
    """Every name `load` takes as a shipped model, for messages."""
    return ", ".join(SHIPPED + SHIPPED_SCALE)


def _load_weights(path, overrides):
    from l2o_tf import networks  # imports TensorFlow
    return networks.load(path, **overrides)


def _load_scale(path, overrides):
    import l2o_scale  # here, not at the top: l2o_scale.checkpoint imports this module
    return l2o_scale.load(path, **overrides)
