"""L2O-Scale's hierarchical RNN optimizer (Wichrowska et al. 2017, as run by the original code; SPEC_SCALE §1).

Three levels of `BiasGRUCell`s: one per coordinate (10 units), one per parameter tensor (20), one global (20). Each
coordinate's cell reads 12 features of its gradient history (momenta at 4 timescales normalised by their RMS, their
products, relative log mean squares, its relative log learning rate); its state gives the update direction (plus a
gradient shortcut), RMS-normalised per tensor, its new decays and a change of its log learning rate. The step is
exp(step_log_lr + offset) * direction, subtracted from the parameter (so the rule's delta is its negative).

The original's quirks are the defaults, each with an option where fixing it makes sense (docs/FIDELITY.md):
`global_input="last"` (the global RNN sees only the last tensor's state; "mean" averages them, as documented
upstream), `step_lr="step"` (the step uses the unsmoothed log learning rate; "smoothed" uses the stored one),
`asinh="log"` (asinh as log(x + sqrt(1 + x^2)), which loses everything for x < ~-1e4; "stable" uses tf.math.asinh).

Meta-parameters keep the original's checkpoint names (`ORIGINAL_NAMES`, `original_variables()`), so the TF1
checkpoint maps onto them one to one (l2o_scale.checkpoint).
"""
import collections
import math

import keras
import numpy as np
import tensorflow as tf

from l2o_tf import rules
from l2o_tf import seeding

SCOPE = "LOL"
LEVEL_SIZES = (10, 20, 20)
NUM_GRADIENT_SCALES = 4
NUM_FEATURES = 12  # 4 scaled momenta, 3 products, 4 relative log mean squares, relative log learning rate
LOG_LR_FLOOR = -33.0  # the original's lower clip of the log learning rate

# Per-tensor state, feature-major: a per-coordinate state of width k is a (k, n) tensor (the original's (n, k)
# transposed), which makes the per-coordinate GRU's GEMMs [k, 22] x [22, n] (2x faster under XLA than batch-major,
# bench/README.md). The original's grad_accum1..4 and ms1..4 slots are the rows of one (4, n) tensor each. `layer`
# (1, 20) and the global state (1, 20) are rows. `true_param` is not kept: without attention it equals the params.
TensorState = collections.namedtuple(
    "TensorState", ["parameter", "layer", "scl_decay", "inp_decay", "log_learning_rate", "grad_accum", "ms"])
HRNNState = collections.namedtuple("HRNNState", ["tensors", "global_state"])


@keras.saving.register_keras_serializable("l2o_scale")
class BiasGRUCell(keras.layers.Layer):
    """A GRU cell with an optional injected bias row [beta_r | beta_u | beta_c] (SPEC_SCALE §1.3).

    r, u = sigmoid([x, h] W_g + b_g + [beta_r, beta_u]); c = tanh([x, r*h] W_c + b_c + beta_c);
    h' = u*h + (1-u)*c. Matrices are N(0, scale/sqrt(fan_in)), the gate bias `gate_bias_init`, the candidate bias 0.
    Keras RNN-cell API: `call(inputs, states, bias=None) -> (h', [h'])`.
    """

    def __init__(self, units, scale=0.5, gate_bias_init=2.2, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.scale = float(scale)
        self.gate_bias_init = float(gate_bias_init)
        self.seed = seed

    @property
    def state_size(self):
        return self.units

    @property
    def output_size(self):
        return self.units

    def build(self, input_shape):
        fan_in = int(input_shape[-1]) + self.units
        normal = keras.initializers.RandomNormal(stddev=self.scale / math.sqrt(fan_in), seed=self.seed)
        self.gates_matrix = self.add_weight(shape=(fan_in, 2 * self.units), initializer=normal,
                                            name="gates.Affine.Matrix")
        self.gates_bias = self.add_weight(shape=(2 * self.units,), name="gates.Affine.Bias",
                                          initializer=keras.initializers.Constant(self.gate_bias_init))
        normal = keras.initializers.RandomNormal(stddev=self.scale / math.sqrt(fan_in),
                                                 seed=None if self.seed is None else self.seed + 1)
        self.candidate_matrix = self.add_weight(shape=(fan_in, self.units), initializer=normal,
                                                name="candidate.Affine.Matrix")
        self.candidate_bias = self.add_weight(shape=(self.units,), initializer="zeros", name="candidate.Affine.Bias")
        self.built = True

    def call(self, inputs, states, bias=None):
        """Batch-major: `inputs` [B, I], `states` [[B, H]], `bias` a [1, 3H] row or None."""
        h = states[0] if isinstance(states, (list, tuple)) else states
        new_h = self.feature_major(tf.transpose(inputs), tf.transpose(h),
                                   None if bias is None else tf.transpose(bias))
        new_h = tf.transpose(new_h)
        return new_h, [new_h]

    def feature_major(self, inputs, h, bias=None):
        """The same step on transposed arrays: `inputs` [I, B], `h` [H, B], `bias` a [3H, 1] column or None."""
        gates = tf.matmul(self.gates_matrix, tf.concat([inputs, h], 0), transpose_a=True) + self.gates_bias[:, None]
        if bias is not None:
            gates += bias[:2 * self.units]
        r, u = tf.split(tf.sigmoid(gates), 2, axis=0)
        candidate = (tf.matmul(self.candidate_matrix, tf.concat([inputs, r * h], 0), transpose_a=True)
                     + self.candidate_bias[:, None])
        if bias is not None:
            candidate += bias[2 * self.units:]
        return u * h + (1.0 - u) * tf.tanh(candidate)

    def get_initial_state(self, batch_size):
        return [tf.zeros([batch_size, self.units])]

    def original_variables(self):
        """{name under the cell's `BiasGRUCell/` scope in the original: variable}."""
        return {"gates/Affine/Matrix": self.gates_matrix, "gates/Affine/Bias": self.gates_bias,
                "candidate/Affine/Matrix": self.candidate_matrix, "candidate/Affine/Bias": self.candidate_bias}

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, scale=self.scale, gate_bias_init=self.gate_bias_init, seed=self.seed)
        return config


def log_asinh(x):
    """asinh as the original computes it: log(x + sqrt(1 + x^2)) (inaccurate, then -inf, for large negative x)."""
    return tf.math.log(x + tf.sqrt(1.0 + tf.square(x)))


@keras.saving.register_keras_serializable("l2o_scale")
class HierarchicalRNN(keras.layers.Layer, rules.UpdateRule):
    """The L2O-Scale optimizer with the defaults the original's flags run (8,349 meta-parameters).

    Update-rule protocol (l2o_tf.rules): `state = opt.initial_state(params)`, `deltas, state = opt.step(grads,
    state)`, new params = params + deltas, all lists in problem order. The initial log learning rates are random:
    `initial_state` draws them from `rng` (a tf.random.Generator) when given, else from the optimizer's own
    generator, seeded by `seed` (`reseed(seed)` restarts it). A fixed seed gives the same sequence of initial
    states; the generator works inside tf.function.
    """

    def __init__(self, level_sizes=LEVEL_SIZES, init_lr_range=(1e-6, 1e-2), max_log_lr=33.0,
                 global_input="last", step_lr="step", asinh="log", gru_scale=0.5, gate_bias_init=2.2,
                 affine_scale=0.5, readout_scale=0.5, scale_decay_bias_init=3.2, input_decay_bias_init=2.2,
                 lr_momentum_logit_init=3.2, seed=None, **kwargs):
        kwargs.setdefault("name", "hierarchical_rnn")
        super().__init__(**kwargs)
        self.level_sizes = tuple(int(s) for s in level_sizes)
        if len(self.level_sizes) != 3 or min(self.level_sizes) <= 0:
            raise ValueError(f"level_sizes must be three positive sizes, got {level_sizes!r}")
        low, high = (float(v) for v in init_lr_range)
        if not 0 < low <= high:
            raise ValueError(f"init_lr_range must satisfy 0 < low <= high, got {init_lr_range!r}")
        self.init_lr_range = (low, high)
        self.max_log_lr = float(max_log_lr)
        for option, value, allowed in (("global_input", global_input, ("last", "mean")),
                                       ("step_lr", step_lr, ("step", "smoothed")),
                                       ("asinh", asinh, ("log", "stable"))):
            if value not in allowed:
                raise ValueError(f"{option} must be one of {allowed}, got {value!r}")
        self.global_input, self.step_lr, self.asinh = global_input, step_lr, asinh
        self.gru_scale, self.gate_bias_init = float(gru_scale), float(gate_bias_init)
        self.affine_scale, self.readout_scale = float(affine_scale), float(readout_scale)
        self.scale_decay_bias_init = float(scale_decay_bias_init)
        self.input_decay_bias_init = float(input_decay_bias_init)
        self.lr_momentum_logit_init = float(lr_momentum_logit_init)
        self.seed = seed
        self._seed_count = 0
        cell = dict(scale=self.gru_scale, gate_bias_init=self.gate_bias_init)
        self.cells = [BiasGRUCell(size, seed=self._next_seed(), name=f"level{i}_gru", **cell)
                      for i, size in enumerate(self.level_sizes)]
        # draws the initial log learning rates (`initial_state` without `rng`); a trainer checkpoints it
        self.initial_lr_generator = (tf.random.Generator.from_non_deterministic_state() if seed is None
                                     else seeding.generator(seed, "initial learning rates"))

    # -- variables ----------------------------------------------------------------------------------------------
    def build(self, input_shape=None):
        """Create the meta-parameters with the original's initialisers (SPEC_SCALE §1.2), in its creation order."""
        s0, s1, s2 = self.level_sizes
        uniform = lambda: keras.initializers.RandomUniform(-1.0, 1.0, seed=self._next_seed())  # noqa: E731
        normal = lambda scale, fan_in, mean=0.0: keras.initializers.RandomNormal(  # noqa: E731
            mean=mean, stddev=scale / math.sqrt(fan_in), seed=self._next_seed())
        const = keras.initializers.Constant
        layer0 = "PerTensor/Layer0_RNN"
        table = [
            ("Level0_RNN/init_vector", (1, s0), uniform()),
            ("Level1_RNN/init_vector", (1, s1), uniform()),
            ("Level2_RNN/init_vector", (1, s2), uniform()),
            ("update_weights", (s0, 1), normal(self.readout_scale, s0)),
            ("scl_decay_weights", (s0, 1), normal(self.readout_scale, s0)),
            ("scl_decay_bias", (1,), const(self.scale_decay_bias_init)),
            ("inp_decay_weights", (s0, 1), normal(self.readout_scale, s0)),
            ("inp_decay_bias", (1,), const(self.input_decay_bias_init)),
            ("learning_rate_weights", (s0, 1), "zeros"),  # zero_init_lr_weights=True
            ("learning_rate_bias", (1,), "zeros"),
            (f"{layer0}/Param/Affine/Matrix", (s1, 3 * s0), normal(self.affine_scale, s1)),
            (f"{layer0}/Param/Affine/Bias", (3 * s0,), "zeros"),
            (f"{layer0}/Global/Affine/Matrix", (s2, 3 * s0), normal(self.affine_scale, s2)),
            (f"{layer0}/Global/Affine/Bias", (3 * s0,), "zeros"),
            ("PerTensor/Layer1_RNN/Affine/Matrix", (s2, 3 * s1), normal(self.affine_scale, s2)),
            ("PerTensor/Layer1_RNN/Affine/Bias", (3 * s1,), "zeros"),
            # the gradient shortcut: utils.affine's default scale 0.1, mean 1/num_gradient_scales
            ("PerTensor/GradsToDelta/Matrix", (NUM_GRADIENT_SCALES, 1),
             normal(0.1, NUM_GRADIENT_SCALES, mean=1.0 / NUM_GRADIENT_SCALES)),
            ("PerTensor/learning_rate_momentum_logit", (), const(self.lr_momentum_logit_init)),
            ("PerTensor/param_stepsize_offset", (), const(-1.0)),
        ]
        v = {name: self.add_weight(shape=shape, initializer=init, name=name.replace("/", "."), dtype="float32")
             for name, shape, init in table}
        for scope, cell, inputs in (("PerTensor/Layer0_RNN", self.cells[0], NUM_FEATURES),
                                    ("PerTensor/Layer1_RNN", self.cells[1], s0 + NUM_FEATURES),
                                    ("Layer2_RNN", self.cells[2], s1)):
            cell.build((None, inputs))
            for name, var in cell.original_variables().items():
                v[f"{scope}/BiasGRUCell/{name}"] = var
        self._v = v  # by name inside the LOL scope
        self._vars = {f"{SCOPE}/{name}": var for name, var in v.items()}
        self.built = True

    def original_variables(self):
        """{original checkpoint name (e.g. "LOL/update_weights"): variable}, in the original's naming."""
        self._ensure_built()
        return dict(self._vars)

    def _next_seed(self):
        if self.seed is None:
            return None
        self._seed_count += 2  # BiasGRUCell uses seed and seed + 1
        return int(self.seed) + self._seed_count

    def _ensure_built(self):
        if not self.built:
            self.build()

    # -- update-rule protocol -----------------------------------------------------------------------------------
    def reseed(self, seed):
        """Restart the generator of the initial log learning rates (what `initial_state` draws without `rng`)."""
        seeding.reset(self.initial_lr_generator, seed, "initial learning rates")

    def initial_state(self, params, rng=None):
        """The original's reset state for `params` (tensors, variables or shapes), in problem order (§1.4)."""
        self._ensure_built()
        rng = rng or self.initial_lr_generator
        v = self._v
        low, high = self.init_lr_range
        tensors = []
        for shape in rules.shapes_of(params):
            n = math.prod(shape)
            if low == high:
                log_lr = tf.fill([1, n], np.float32(math.log(low)))
            else:
                bounds = (math.log(low) / 2.0, math.log(high) / 2.0)
                log_lr = rng.uniform([1, n], *bounds) + rng.uniform([], *bounds)
            zeros = tf.zeros([1, n])
            tensors.append(TensorState(
                parameter=tf.tile(tf.transpose(v["Level0_RNN/init_vector"]), [1, n]),
                layer=tf.identity(v["Level1_RNN/init_vector"]),
                scl_decay=zeros, inp_decay=zeros,
                log_learning_rate=tf.clip_by_value(log_lr, LOG_LR_FLOOR, self.max_log_lr),
                grad_accum=tf.zeros([NUM_GRADIENT_SCALES, n]), ms=tf.zeros([NUM_GRADIENT_SCALES, n])))
        return HRNNState(tuple(tensors), tf.identity(v["Level2_RNN/init_vector"]))

    def step(self, gradients, state, loss=None):
        """(deltas, new state): one step of every tensor, then of the global RNN (§1.5)."""
        self._ensure_built()
        gradients = list(gradients)
        if len(gradients) != len(state.tensors):
            raise ValueError(f"{type(self).__name__}.step got {len(gradients)} gradients for a state made for "
                             f"{len(state.tensors)} tensors")
        for g in gradients:
            if g.dtype != tf.float32:
                raise TypeError(f"{type(self).__name__}.step needs float32 gradients, got {g.dtype.name}")
        return self._step(gradients, state)

    def call(self, gradients, state):
        return self._step(list(gradients), state)

    def _step(self, gradients, state):
        mean_log_lr = (tf.add_n([tf.reduce_sum(s.log_learning_rate) for s in state.tensors])
                       / sum(int(s.log_learning_rate.shape[1]) for s in state.tensors))
        deltas, new_tensors = [], []
        for gradient, tensor_state in zip(gradients, state.tensors):
            update, new_state = self.tensor_step(tf.reshape(gradient, [1, -1]), tensor_state, mean_log_lr,
                                                 state.global_state)
            deltas.append(-tf.reshape(update, tf.shape(gradient)) if gradient.shape.rank is None
                          else -tf.reshape(update, gradient.shape))
            new_tensors.append(new_state)
        if self.global_input == "last":
            global_input = new_tensors[-1].layer
        else:
            global_input = tf.reduce_mean(tf.concat([s.layer for s in new_tensors], 0), 0, keepdims=True)
        global_state, _ = self.cells[2](global_input, [state.global_state])
        return deltas, HRNNState(tuple(new_tensors), global_state)

    # -- one tensor ---------------------------------------------------------------------------------------------
    def features(self, gradient, state, mean_log_lr):
        """The 12 features of a (1, n) gradient row: (features (12, n), scaled momenta (4, n), grad_accum, ms)."""
        decay = state.inp_decay
        decays = [decay]
        for _ in range(NUM_GRADIENT_SCALES - 1):
            decays.append(tf.sqrt(decays[-1]))  # each accumulator on twice the timescale of the one before
        decays = tf.concat(decays, 0)
        accum = (1.0 - decays) * gradient + decays * state.grad_accum
        # the first step (every entry of a scale's ms still zero) takes the momentum's square without decay
        first = tf.reduce_all(tf.equal(state.ms, 0.0), axis=1, keepdims=True)
        scale_decay = tf.where(first, tf.zeros_like(state.ms), tf.broadcast_to(state.scl_decay, tf.shape(state.ms)))
        ms = (1.0 - scale_decay) * (tf.square(accum) + 1e-12) + scale_decay * state.ms
        ratio = accum / tf.sqrt(ms + 1e-16)
        scaled = log_asinh(ratio) if self.asinh == "log" else tf.math.asinh(ratio)
        log_ms = tf.math.log(ms + 1e-16)
        features = tf.concat([scaled, scaled[:-1] * scaled[1:],
                              log_ms - tf.reduce_mean(log_ms, axis=0, keepdims=True),
                              state.log_learning_rate - mean_log_lr], 0)
        return features, scaled, accum, ms

    def tensor_step(self, gradient, state, mean_log_lr, global_state):
        """(update_step (1, n) to subtract, new TensorState) for one tensor's (1, n) gradient row."""
        v = self._v
        x, scaled, accum, ms = self.features(gradient, state, mean_log_lr)
        bias0 = (tf.matmul(state.layer, v["PerTensor/Layer0_RNN/Param/Affine/Matrix"])
                 + v["PerTensor/Layer0_RNN/Param/Affine/Bias"]
                 + tf.matmul(global_state, v["PerTensor/Layer0_RNN/Global/Affine/Matrix"])
                 + v["PerTensor/Layer0_RNN/Global/Affine/Bias"])
        h = self.cells[0].feature_major(x, state.parameter, tf.transpose(bias0))
        bias1 = tf.matmul(global_state, v["PerTensor/Layer1_RNN/Affine/Matrix"]) + v["PerTensor/Layer1_RNN/Affine/Bias"]
        layer_input = tf.transpose(tf.reduce_mean(tf.concat([h, x], 0), 1, keepdims=True))
        layer, _ = self.cells[1](layer_input, [state.layer], bias=bias1)
        project = lambda name, inputs: tf.matmul(v[name], inputs, transpose_a=True)  # noqa: E731  [k,1]^T [k,n]
        direction = project("update_weights", h) + project("PerTensor/GradsToDelta/Matrix", scaled)
        direction = direction / tf.sqrt(tf.reduce_mean(tf.square(direction)) + 1e-16)
        scl_decay = tf.sigmoid(project("scl_decay_weights", h) + v["scl_decay_bias"])
        inp_decay = tf.sigmoid(project("inp_decay_weights", h) + v["inp_decay_bias"])
        step_log_lr = state.log_learning_rate + project("learning_rate_weights", h) + v["learning_rate_bias"]
        # straight-through clip: the forward value is clipped, the gradient is the unclipped one's
        step_log_lr += tf.stop_gradient(tf.clip_by_value(step_log_lr, LOG_LR_FLOOR, self.max_log_lr) - step_log_lr)
        momentum = tf.sigmoid(v["PerTensor/learning_rate_momentum_logit"])
        new_log_lr = momentum * state.log_learning_rate + (1.0 - momentum) * step_log_lr
        used_log_lr = step_log_lr if self.step_lr == "step" else new_log_lr
        update = tf.exp(used_log_lr + v["PerTensor/param_stepsize_offset"]) * direction
        return update, TensorState(h, layer, scl_decay, inp_decay, new_log_lr, accum, ms)

    # -- config -------------------------------------------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update(level_sizes=list(self.level_sizes), init_lr_range=list(self.init_lr_range),
                      max_log_lr=self.max_log_lr, global_input=self.global_input, step_lr=self.step_lr,
                      asinh=self.asinh, gru_scale=self.gru_scale, gate_bias_init=self.gate_bias_init,
                      affine_scale=self.affine_scale, readout_scale=self.readout_scale,
                      scale_decay_bias_init=self.scale_decay_bias_init,
                      input_decay_bias_init=self.input_decay_bias_init,
                      lr_momentum_logit_init=self.lr_momentum_logit_init, seed=self.seed)
        return config
