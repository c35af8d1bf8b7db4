"""L2O-Scale checkpoints in the original's TF1 format: import, and save with the original variable names.

The original saves its meta-parameters with a TF1 `Saver` (`model.ckpt-N.index` + `.data-00000-of-00001`, and a
`checkpoint` state file in the directory). `read` opens such a checkpoint with `tf.train.load_checkpoint`; `load`
builds a `HierarchicalRNN` and assigns every `LOL/...` variable by name, checking shapes. `save` writes the same
format with the same names (raw `SaveV2`, no object graph), so the original TF1 code can restore it, plus a JSON
sidecar `<prefix>.json` with the optimizer's config, which the original format has no room for.

`resolve` needs no TensorFlow (this module imports it only when a function reads or writes a bundle), so the
command line can check a checkpoint path before paying for TensorFlow's import.
"""
import json
import os
import re
import tempfile

import numpy as np

from l2o_tf import errors
from l2o_tf import fileio
from l2o_tf import models

LOGDIR_NAME = "HierarchicalRNN_GRUCell_20_2"  # the original's logdir under --train_dir
DATA_SUFFIX = ".data-00000-of-00001"


class CheckpointError(errors.L2OError):
    """A checkpoint that cannot be found, read, or mapped onto the optimizer."""


def resolve(path, restore_model_name=None):
    """The checkpoint prefix for `path`: a shipped name (`scale_smoke`), a prefix (`.../model.ckpt-0`), or a
    directory.

    For a directory: its `HierarchicalRNN_GRUCell_20_2` subdirectory when it has one (the original's --train_dir
    layout), then `restore_model_name` inside it when given, else the latest checkpoint its `checkpoint` file names,
    else its only `*.index` file."""
    path = os.fspath(path)
    if path in models.SHIPPED_SCALE:
        path = models.shipped_path(path)
    if os.path.isdir(path):
        logdir = os.path.join(path, LOGDIR_NAME)
        directory = logdir if os.path.isdir(logdir) else path
        if restore_model_name:
            return resolve(os.path.join(directory, restore_model_name))
        latest = _state_file_paths(directory)[:1]
        if latest and os.path.exists(latest[0] + ".index"):
            return latest[0]
        indexes = sorted(name[:-len(".index")] for name in os.listdir(directory) if name.endswith(".index"))
        if len(indexes) == 1:
            return os.path.join(directory, indexes[0])
        if not indexes:
            raise CheckpointError(f"{directory}: no checkpoint (no `checkpoint` file and no *.index file)")
        raise CheckpointError(f"{directory}: several checkpoints ({', '.join(indexes)}) and no `checkpoint` file; "
                              "give the prefix, e.g. .../model.ckpt-0")
    if restore_model_name:
        raise CheckpointError(f"{path} is not a directory; a restore model name needs the directory holding it")
    if not os.path.exists(path + ".index"):
        hint = ("give the prefix without .index" if path.endswith(".index")
                else f"shipped checkpoints: {', '.join(models.SHIPPED_SCALE)}")
        raise CheckpointError(f"{path}: no such checkpoint directory or prefix ({path}.index does not exist; {hint})")
    return path


def read(path):
    """(prefix, {variable name: numpy array}) of every tensor in the checkpoint at `path` (see `resolve`)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    prefix = resolve(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
        return prefix, {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    except (tf.errors.OpError, ValueError) as e:
        message = getattr(e, "message", str(e)).strip().splitlines()[0]
        raise CheckpointError(f"{prefix}: not a readable TensorFlow checkpoint ({message})") from None


def load(path, **overrides):
    """A `HierarchicalRNN` with the meta-parameters of the checkpoint at `path` (an original one or one we saved).

    The config comes from the `<prefix>.json` sidecar when there is one, else the original flags' defaults;
    `overrides` replace entries (e.g. `init_lr_range=(1e-5, 1e-3)`, `global_input="mean"`)."""
    from l2o_scale import hierarchical_rnn  # pylint: disable=import-outside-toplevel

    prefix, tensors = read(path)
    config = {}
    sidecar = prefix + ".json"
    if os.path.exists(sidecar):
        try:
            with open(sidecar, encoding="utf-8") as f:
                spec = json.load(f)
            if spec["class_name"] != hierarchical_rnn.HierarchicalRNN.__name__:
                raise ValueError(f"class {spec['class_name']!r}")
            config = dict(spec["config"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{sidecar}: not a valid l2o-scale config sidecar ({e})") from None
    try:
        optimizer = hierarchical_rnn.HierarchicalRNN.from_config({**config, **overrides})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{prefix}: cannot build the optimizer with {overrides or config} ({e})") from None
    assign(optimizer, tensors, prefix)
    return optimizer


def assign(optimizer, tensors, where="the checkpoint"):
    """Assign `tensors` ({original name: array}) to the optimizer's variables; each must be there, shapes equal.

    Other entries (RMSProp slots, global_step) are ignored."""
    variables = optimizer.original_variables()
    missing = sorted(name for name in variables if name not in tensors)
    if missing:
        raise CheckpointError(f"{where}: missing L2O-Scale variable(s) {', '.join(missing)}; not an L2O-Scale "
                              "HierarchicalRNN checkpoint, or one saved with other level sizes")
    for name, var in variables.items():
        value = np.asarray(tensors[name])
        if tuple(value.shape) != tuple(var.shape):
            raise CheckpointError(f"{where}: {name} has shape {list(value.shape)}, the optimizer needs "
                                  f"{list(var.shape)} (level sizes {list(optimizer.level_sizes)})")
        if value.dtype != np.float32:
            raise CheckpointError(f"{where}: {name} is {value.dtype}, expected float32")
    for name, var in variables.items():
        var.assign(tensors[name])


def save(optimizer, prefix, extra=None, update_state_file=True):
    """Write the meta-parameters under their original names to `prefix` (.index + .data) and `<prefix>.json`.

    `extra` ({name: array}) adds other tensors (e.g. the meta-optimizer's `LOL/.../RMSProp` slots and
    `global_step`, which a TF1 Saver over all global variables expects). Files appear whole: the bundle is written
    under a temporary prefix and renamed (data first, then the index that makes it readable). With
    `update_state_file`, the directory's `checkpoint` file names it the latest, as a TF1 Saver does."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    prefix = os.path.abspath(os.fspath(prefix))
    directory = os.path.dirname(prefix)
    os.makedirs(directory, exist_ok=True)
    tensors = {name: np.asarray(var.numpy()) for name, var in optimizer.original_variables().items()}
    for name, value in (extra or {}).items():
        if name in tensors:
            raise ValueError(f"extra tensor {name!r} would overwrite a meta-parameter")
        tensors[name] = np.asarray(value)
    names = sorted(tensors)
    tmp_dir = tempfile.mkdtemp(dir=directory, prefix=".ckpt-")
    tmp_prefix = os.path.join(tmp_dir, "tmp")
    try:
        with tf.device("CPU:0"):
            tf.raw_ops.SaveV2(prefix=tmp_prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                              tensors=[tf.constant(tensors[name]) for name in names])
        os.replace(tmp_prefix + DATA_SUFFIX, prefix + DATA_SUFFIX)
        os.replace(tmp_prefix + ".index", prefix + ".index")
    finally:
        for name in os.listdir(tmp_dir):
            os.remove(os.path.join(tmp_dir, name))
        os.rmdir(tmp_dir)
    config = {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}
    fileio.atomic_write_bytes(prefix + ".json", json.dumps(config, indent=2).encode())
    if update_state_file:
        _update_state_file(directory, os.path.basename(prefix))
    return prefix


_STATE_LINE = re.compile(r'^\s*(model_checkpoint_path|all_model_checkpoint_paths)\s*:\s*"(.*)"\s*$')


def _state_file_paths(directory):
    """The prefixes a TF1 `checkpoint` state file lists, the latest first ([] without one), relative ones joined
    to `directory`."""
    try:
        with open(os.path.join(directory, "checkpoint"), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    latest, others = [], []
    for line in lines:
        match = _STATE_LINE.match(line)
        if match:
            (latest if match.group(1) == "model_checkpoint_path" else others).append(
                os.path.join(directory, match.group(2)))
    return latest + [p for p in others if p not in latest]


def _update_state_file(directory, name):
    """Name `name` the latest checkpoint in `directory/checkpoint` (TF1's text format), keeping the others listed."""
    paths = [p for p in dict.fromkeys(os.path.basename(p) for p in _state_file_paths(directory)) if p != name]
    paths.append(name)
    lines = [f'model_checkpoint_path: "{name}"'] + [f'all_model_checkpoint_paths: "{p}"' for p in paths]
    fileio.atomic_write_bytes(os.path.join(directory, "checkpoint"), ("\n".join(lines) + "\n").encode())
