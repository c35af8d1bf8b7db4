"""The original's weights files (`cw.l2l-N` for L2O-DM, `rp.l2l-N` for RNNprop): a pickled dict
module -> variable -> float32 array, written by the original with `dill`.

They are read with a restricted unpickler that can build nothing but dicts and float arrays (no `dill` needed, no
code executed), and written in a form that plain pickle, dill and the original TF1 code all read.
"""
import collections
import io
import pickle

import numpy as np

from l2o_tf import errors
from l2o_tf import fileio


class WeightsFileError(errors.L2OError, ValueError):
    """A weights file that is missing, corrupt, unsafe, or not the weights of a known learned optimizer."""


def read(path):
    """The dict module -> variable -> float32 array of a weights pickle, read without running arbitrary code."""
    try:
        with open(path, "rb") as f:
            weights = fileio.RestrictedUnpickler(f, _WEIGHTS_GLOBALS, what="a weights file").load()
    except FileNotFoundError:
        raise WeightsFileError(f"{path}: no such weights file") from None
    except IsADirectoryError:
        raise WeightsFileError(f"{path} is a directory: pass the file itself, e.g. {path}/cw.l2l-0") from None
    except pickle.UnpicklingError as e:
        raise WeightsFileError(f"{path}: refused or corrupt pickle: {e}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as e:
        raise WeightsFileError(f"{path}: corrupt or truncated weights pickle ({type(e).__name__}: {e})") from None
    if not isinstance(weights, dict) or not all(
            isinstance(v, dict) and all(isinstance(a, np.ndarray) for a in v.values()) for v in weights.values()):
        raise WeightsFileError(f"{path}: not a learned optimizer's weights file (expected a pickled dict of "
                               f"module -> variable -> array, got {_summary(weights)})")
    return {m: {n: np.asarray(a, np.float32) for n, a in v.items()} for m, v in weights.items()}


class _DillModule:
    """Stands in for the numpy module that dill's pickles import only to fetch `_reconstruct`."""


def _dill_load_type(name):
    if name != "dict":
        raise pickle.UnpicklingError(f"type {name!r} is not allowed in a weights file")
    return dict


def _dill_import_module(name):
    if name not in ("numpy.core._multiarray_umath", "numpy._core._multiarray_umath", "numpy.core.multiarray"):
        raise pickle.UnpicklingError(f"module {name!r} is not allowed in a weights file")
    return _DillModule()


def _dill_get_attr(module, name):
    if not isinstance(module, _DillModule) or name != "_reconstruct":
        raise pickle.UnpicklingError(f"attribute {name!r} is not allowed in a weights file")
    return fileio.NUMPY_GLOBALS[("numpy._core.multiarray", "_reconstruct")]


_WEIGHTS_GLOBALS = {
    **fileio.NUMPY_GLOBALS,
    ("collections", "defaultdict"): collections.defaultdict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("dill._dill", "_load_type"): _dill_load_type,
    ("dill._dill", "_import_module"): _dill_import_module,
    ("dill._dill", "_get_attr"): _dill_get_attr,
}


class _WeightsPickler(pickle.Pickler):
    """Pickles arrays as `numpy.ndarray(shape, dtype, buffer)`, a form every numpy version reads."""

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            array = np.ascontiguousarray(obj, dtype=np.float32)
            return np.ndarray, (array.shape, array.dtype, array.tobytes())
        return NotImplemented


def dumps(weights):
    """The bytes of a weights file for the dict module -> variable -> array."""
    buffer = io.BytesIO()
    _WeightsPickler(buffer, protocol=3).dump({m: dict(v) for m, v in weights.items()})
    return buffer.getvalue()


def _summary(obj):
    if isinstance(obj, dict):
        return "a dict of " + ", ".join(f"{k!r}: {type(v).__name__}" for k, v in list(obj.items())[:4])
    return f"a {type(obj).__name__}"
