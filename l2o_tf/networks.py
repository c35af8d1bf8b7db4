"""Learned optimizers as Keras RNN cells, and their files.

Both learned optimizers of the paper are the original's `StandardDeepLSTM`: per coordinate, some input features go
through two Sonnet-1 LSTMs of 20 units and a linear layer to one number, the additive update. They differ only in
the features (L2O-DM: LogAndSign of the gradient; RNNprop: Adam-normalised moments through a linear+ELU projection)
and in the output (RNNprop squashes with tanh). `CoordinatewiseLSTMCell` holds what they share.

A cell works on any batch of coordinates: the project flattens every optimizee parameter into one vector, so a
batch row is one scalar parameter. `step(gradient, state)` is the 1-D convenience around the Keras `call`.

Files: the original pickles (`cw.l2l-N`, `rp.l2l-N`: a dict module -> variable -> float32 array) are read with a
restricted unpickler that can build nothing but dicts and float arrays, and are written back in a layout the
original TF1 code reads. A JSON sidecar (`<file>.json`) keeps the cell's config where the pickle has no room for it.
"""
import json
import os

import keras
import numpy as np
import tensorflow as tf

from l2o_tf import fileio
from l2o_tf import original_pickle
from l2o_tf import rules

FORGET_BIAS = 1.0
HIDDEN_SIZES = (20, 20)


def log_and_sign(gradient, k=5.0, axis=-1):
    """The original LogAndSign features [max(log(|g|+eps)/k, -1), clip(g*e^k, -1, 1)], stacked along `axis`."""
    eps = np.finfo(np.float32).eps
    log = tf.maximum(tf.math.log(tf.abs(gradient) + eps) / k, -1.0)
    sign = tf.clip_by_value(gradient * np.float32(np.exp(k)), -1.0, 1.0)
    return tf.concat([log, sign], axis=axis)


def sonnet_lstm(inputs, h, c, w_gates, b_gates):
    """One step of a Sonnet-1 LSTM, feature-major (`inputs` [D, n], `h`, `c` [H, n]; `w_gates` [D + H, 4H] as
    stored): gates from [inputs, h] in the order i, j, f, o, forget bias added at run time.

    Feature-major makes the four gate blocks contiguous rows, so splitting them copies nothing."""
    gates = tf.matmul(w_gates, tf.concat([inputs, h], axis=0), transpose_a=True) + b_gates[:, None]
    i, j, f, o = tf.split(gates, 4, axis=0)
    c = tf.sigmoid(f + FORGET_BIAS) * c + tf.sigmoid(i) * tf.tanh(j)
    h = tf.tanh(c) * tf.sigmoid(o)
    return h, c


def _dense(x, module):
    """Sonnet Linear on feature-major `x` [in, n]: (x^T w + b)^T."""
    return tf.matmul(module["w"], x, transpose_a=True) + module["b"][:, None]


class CoordinatewiseLSTMCell(keras.layers.Layer, rules.CoordinatewiseRule):
    """Features -> 2 Sonnet LSTMs -> linear -> scaled additive update, shared by every coordinate.

    Subclasses say how the gradient becomes features (`_features`, with any extra per-coordinate state they keep)
    and how the linear output becomes an update (`_output`). Variables are named as the original's modules
    (`lstm_1/w_gates`, `linear/b`, ...) so that the original files map onto them one to one.

    The computation is feature-major: `step` keeps its state as [size, n] tensors. The Keras RNN-cell `call`
    (batch-major, [n, size]) transposes around the same computation.
    """

    key = None  # file prefix of the original: "cw" or "rp"
    extra_state_sizes = ()
    lstm_step = staticmethod(sonnet_lstm)  # one LSTM step; bench/bench_lstm_backward.py swaps in variants

    def __init__(self, scale=0.01, hidden_sizes=HIDDEN_SIZES, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.hidden_sizes = tuple(int(s) for s in hidden_sizes)
        self.seed = seed
        self._modules = {}

    # -- Keras RNN cell API -------------------------------------------------------------------------------------
    @property
    def state_size(self):
        return [s for size in self.hidden_sizes for s in (size, size)] + list(self.extra_state_sizes)

    @property
    def output_size(self):
        return 1

    def build(self, input_shape=None):
        size = self.feature_size
        for index, hidden in enumerate(self.hidden_sizes, start=1):
            stddev = 1.0 / np.sqrt(size + hidden)
            self._add_module(f"lstm_{index}", w_gates=([size + hidden, 4 * hidden], stddev),
                             b_gates=([4 * hidden], stddev))
            size = hidden
        self._add_module("linear", w=([size, 1], 1.0 / np.sqrt(size)), b=([1], None))
        self.built = True

    def call(self, inputs, states):
        """Batch-major RNN-cell step: `inputs` [n, 1] gradients, `states` [n, size] each."""
        delta, states = self._step(tf.transpose(inputs), [tf.transpose(s) for s in states])
        return tf.transpose(delta), [tf.transpose(s) for s in states]

    def get_initial_state(self, batch_size):
        return [tf.zeros([batch_size, size]) for size in self.state_size]

    def get_config(self):
        config = super().get_config()
        config.update(scale=self.scale, hidden_sizes=list(self.hidden_sizes), seed=self.seed)
        return config

    # -- update-rule protocol (l2o_tf.rules), on the flat vector of all coordinates ------------------------------
    def flat_initial_state(self, num_coordinates):
        """Zero state for `num_coordinates` scalar parameters (the original's initial state), feature-major."""
        return tuple(tf.zeros([size, num_coordinates]) for size in self.state_size)

    def flat_step(self, gradient, state):
        """Update for a 1-D gradient: returns (delta to add to the parameters, new state)."""
        self._ensure_built()
        delta, state = self._step(tf.reshape(gradient, [1, -1]), list(state))
        return tf.reshape(delta, [-1]), tuple(state)

    def state_coordinates(self, state):
        return state[0].shape[-1]

    def _step(self, gradient, states):
        """The update, feature-major: `gradient` [1, n], `states` [size, n] each."""
        num_lstm_states = 2 * len(self.hidden_sizes)
        features, extra = self._features(gradient, states[num_lstm_states:])
        x, new_states = features, []
        for index, (h, c) in enumerate(zip(states[0:num_lstm_states:2], states[1:num_lstm_states:2]), start=1):
            module = self._modules[f"lstm_{index}"]
            x, c = self.lstm_step(x, h, c, module["w_gates"], module["b_gates"])
            new_states += [x, c]
        return self._output(_dense(x, self._modules["linear"])), new_states + list(extra)

    # -- original weights ---------------------------------------------------------------------------------------
    def get_original_weights(self):
        """The weights as the original's dict: module -> variable -> float32 numpy array."""
        self._ensure_built()
        return {module: {name: np.asarray(var.numpy(), np.float32) for name, var in variables.items()}
                for module, variables in self._modules.items()}

    def set_original_weights(self, weights):
        """Assign weights given in the original's dict layout; every variable must be present with its shape."""
        self._ensure_built()
        expected = {(m, n): tuple(v.shape) for m, variables in self._modules.items() for n, v in variables.items()}
        found = {(m, n): np.shape(a) for m, variables in weights.items() for n, a in variables.items()}
        if found != expected:
            raise ValueError(f"{type(self).__name__} needs weights {_describe(expected)}, got {_describe(found)}")
        for module, variables in self._modules.items():
            for name, var in variables.items():
                var.assign(np.asarray(weights[module][name], np.float32))

    # -- helpers ------------------------------------------------------------------------------------------------
    @property
    def feature_size(self):
        raise NotImplementedError

    def _features(self, gradient, extra_states):
        raise NotImplementedError

    def _output(self, linear_output):
        return linear_output * self.scale

    def _ensure_built(self):
        if not self.built:
            self.build()

    def _add_module(self, module, **variables):
        """Create the module's variables: truncated normal of the given stddev, or zeros when it is None."""
        self._modules[module] = {}
        for name, (shape, stddev) in variables.items():
            initializer = ("zeros" if stddev is None else
                           keras.initializers.TruncatedNormal(stddev=float(stddev), seed=self._next_seed()))
            self._modules[module][name] = self.add_weight(
                shape=shape, initializer=initializer, name=f"{module}.{name}", dtype="float32")

    def _next_seed(self):
        if self.seed is None:
            return None
        self._seed_offset = getattr(self, "_seed_offset", -1) + 1
        return int(self.seed) + self._seed_offset


@keras.saving.register_keras_serializable("l2o_tf")
class CoordinateWiseDeepLSTM(CoordinatewiseLSTMCell):
    """L2O-DM (Andrychowicz et al. 2016) as configured by the paper: LogAndSign(k=5) features, output scale 0.01.

    `preprocess="identity"` with `scale=1.0` is the original's config for the `quadratic` problem.
    """

    key = "cw"

    def __init__(self, preprocess="log_and_sign", k=5.0, **kwargs):
        super().__init__(**kwargs)
        if preprocess not in ("log_and_sign", "identity"):
            raise ValueError(f"preprocess must be 'log_and_sign' or 'identity', got {preprocess!r}")
        self.preprocess = preprocess
        self.k = float(k)

    @property
    def feature_size(self):
        return 2 if self.preprocess == "log_and_sign" else 1

    def _features(self, gradient, extra_states):
        if self.preprocess == "identity":
            return gradient, []
        return log_and_sign(gradient, self.k, axis=0), []

    def get_config(self):
        config = super().get_config()
        config.update(preprocess=self.preprocess, k=self.k)
        return config


@keras.saving.register_keras_serializable("l2o_tf")
class RNNprop(CoordinatewiseLSTMCell):
    """RNNprop (Lv et al. 2017) as in the paper's code: Adam-normalised [m~, g~] -> Linear(2, 20) + ELU -> LSTMs.

    The moments m, v and the step counter are per-coordinate state, so `step` takes raw gradients:
    m~ = m^/(sqrt(v^)+1e-8), g~ = g/(sqrt(v^)+1e-8), bias-corrected with the step counted from 1. The update is
    tanh(linear) * scale.
    """

    key = "rp"
    extra_state_sizes = (1, 1, 1)  # m, v, number of steps taken
    epsilon = 1e-8

    def __init__(self, beta1=0.95, beta2=0.95, projection_size=20, **kwargs):
        if "name" not in kwargs:  # Keras would spell the class name "rn_nprop"; numbered as Keras numbers its own
            uid = keras.backend.get_uid("rnnprop")
            kwargs["name"] = "rnnprop" if uid == 1 else f"rnnprop_{uid - 1}"
        super().__init__(**kwargs)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.projection_size = int(projection_size)

    @property
    def feature_size(self):
        return self.projection_size

    def build(self, input_shape=None):
        self._add_module("input_projection", w=([2, self.projection_size], 1.0 / np.sqrt(2.0)),
                         b=([self.projection_size], None))
        super().build(input_shape)

    def _features(self, gradient, extra_states):
        m, v, steps = extra_states
        m = self.beta1 * m + (1.0 - self.beta1) * gradient
        v = self.beta2 * v + (1.0 - self.beta2) * tf.square(gradient)
        steps = steps + 1.0
        m_hat = m / (1.0 - tf.pow(self.beta1, steps))
        denominator = tf.sqrt(v / (1.0 - tf.pow(self.beta2, steps))) + self.epsilon
        features = tf.concat([m_hat / denominator, gradient / denominator], axis=0)
        return tf.nn.elu(_dense(features, self._modules["input_projection"])), [m, v, steps]

    def _output(self, linear_output):
        return tf.tanh(linear_output) * self.scale

    def get_config(self):
        config = super().get_config()
        config.update(beta1=self.beta1, beta2=self.beta2, projection_size=self.projection_size)
        return config


NETS = {"dm": CoordinateWiseDeepLSTM, "rnnprop": RNNprop}  # the entry points' names for the cells


def for_problem(net, problem_name, **kwargs):
    """The original's network config for a problem: `net` is "dm" or "rnnprop" (RNNprop ignores the problem)."""
    if net not in NETS:
        raise ValueError(f"unknown network {net!r}: expected one of {', '.join(NETS)}")
    if net == "dm" and problem_name == "quadratic":
        kwargs = {"preprocess": "identity", "scale": 1.0, **kwargs}
    return NETS[net](**kwargs)


# -- files ------------------------------------------------------------------------------------------------------

WeightsFileError = original_pickle.WeightsFileError


def save(cell, save_path, index=0, metadata=None):
    """Write `<save_path>/<key>.l2l-<index>` (the original's layout) and its `.json` config sidecar; atomic.

    `metadata` (how the model was trained: problem, data source, ...) is kept in the sidecar for people to read."""
    path = os.path.join(save_path, f"{cell.key}.l2l-{index}")
    fileio.atomic_write_bytes(path, original_pickle.dumps(cell.get_original_weights()))
    config = {"class_name": type(cell).__name__, "config": cell.get_config(), "metadata": metadata or {}}
    fileio.atomic_write_bytes(path + ".json", json.dumps(config, indent=2).encode())
    return path


def load(path, **overrides):
    """A learned optimizer from a file: an original pickle (`cw.l2l-N`, `rp.l2l-N`) or one we saved.

    The network and its config come from the `.json` sidecar when there is one, otherwise from the pickle's
    variables (input_projection -> RNNprop; lstm_1 input of 2 -> DM with LogAndSign; of 1 -> DM identity, scale 1).
    `overrides` replace config entries (e.g. `beta1=0.9`).
    """
    weights = original_pickle.read(path)
    sidecar = path + ".json"
    if os.path.exists(sidecar):
        try:
            with open(sidecar, encoding="utf-8") as f:
                spec = json.load(f)
            cls, config = {c.__name__: c for c in NETS.values()}[spec["class_name"]], spec["config"]
            cls.from_config(config)
        except (ValueError, KeyError, TypeError) as e:
            raise WeightsFileError(f"{sidecar}: not a valid l2o-tf config sidecar ({e!r})") from None
    else:
        cls, config = _infer_cell(path, weights)
    try:
        cell = cls.from_config({**config, **overrides})
    except (ValueError, TypeError):
        raise WeightsFileError(f"{path} holds a {cls.__name__}, which takes no "
                               f"{', '.join(sorted(set(overrides) - set(config))) or 'such settings'} "
                               f"({', '.join(f'{k}={v!r}' for k, v in overrides.items())})") from None
    try:
        cell.set_original_weights(weights)
    except ValueError as e:
        raise WeightsFileError(f"{path}: {e}") from None
    return cell


def _infer_cell(path, weights):
    if "input_projection" in weights:
        return RNNprop, {}
    try:
        inputs = weights["lstm_1"]["w_gates"].shape[0] - weights["lstm_1"]["b_gates"].shape[0] // 4
    except (KeyError, IndexError):
        raise WeightsFileError(f"{path}: no lstm_1/w_gates and b_gates: not an L2O-DM or RNNprop file") from None
    if inputs == 2:
        return CoordinateWiseDeepLSTM, {}
    if inputs == 1:
        return CoordinateWiseDeepLSTM, {"preprocess": "identity", "scale": 1.0}
    raise WeightsFileError(f"{path}: lstm_1 takes {inputs} inputs; L2O-DM takes 2 (LogAndSign) or 1 (identity)")


def _describe(shapes):
    return ", ".join(f"{m}/{n}{list(s)}" for (m, n), s in sorted(shapes.items()))
