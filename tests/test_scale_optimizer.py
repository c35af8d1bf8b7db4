"""L2O-Scale's hierarchical RNN against an independent float64 numpy reading of SPEC_SCALE §1, and its checkpoints."""
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import l2o_scale
from l2o_scale import checkpoint
from l2o_scale import hierarchical_rnn
from l2o_tf import errors
from l2o_tf import meta
from l2o_tf import models
from l2o_tf import problems

SHAPES = [(6, 3), (3,), (3, 2), (2,)]  # a small MLP's tensors, in problem order


def original_prefix():
    """The prefix of the original L2O-Scale checkpoint (its 6-step smoke test), as the package ships it (byte for
    byte: test_keras_optimizer checks its files against the original's digests)."""
    return os.path.join(models.shipped_path("scale_smoke"), "model.ckpt-0")


# -- independent numpy reference (float64), written from SPEC_SCALE §1.3-§1.5 ------------------------------------

def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_gru(w, scope, x, h, bias=None):
    """BiasGRUCell (§1.3): weights w[f"{scope}/BiasGRUCell/..."]; bias a (1, 3H) row or None."""
    size = h.shape[1]
    bias = np.zeros([1, 3 * size]) if bias is None else bias
    cell = f"{scope}/BiasGRUCell"
    gates = np.concatenate([x, h], 1) @ w[f"{cell}/gates/Affine/Matrix"] + w[f"{cell}/gates/Affine/Bias"]
    r = sigmoid(gates[:, :size] + bias[:, :size])
    u = sigmoid(gates[:, size:] + bias[:, size:2 * size])
    c = np.tanh(np.concatenate([x, r * h], 1) @ w[f"{cell}/candidate/Affine/Matrix"]
                + w[f"{cell}/candidate/Affine/Bias"] + bias[:, 2 * size:])
    return u * h + (1 - u) * c


def np_step(w, gradients, states, global_state, max_log_lr=33.0):
    """One step of §1.5. states: per tensor a dict with the original's keys (grad_accum1..4, ms1..4 as columns).

    Returns (update_steps to subtract, new states, new global state, features per tensor)."""
    w = {k[len("LOL/"):]: v.astype(np.float64) for k, v in w.items()}
    mean_log_lr = sum(s["log_learning_rate"].sum() for s in states) / sum(s["log_learning_rate"].size for s in states)
    updates, new_states, all_features = [], [], []
    for grad, s in zip(gradients, states):
        g = grad.reshape(-1, 1).astype(np.float64)
        decays = [s["inp_decay"]]
        for _ in range(3):
            decays.append(np.sqrt(decays[-1]))
        new = {}
        scaled, log_ms = [], []
        for i in range(1, 5):
            m = (1 - decays[i - 1]) * g + decays[i - 1] * s[f"grad_accum{i}"]
            sd = 0.0 if np.all(s[f"ms{i}"] == 0) else s["scl_decay"]
            ms = (1 - sd) * (m ** 2 + 1e-12) + sd * s[f"ms{i}"]
            y = m / np.sqrt(ms + 1e-16)
            scaled.append(np.log(y + np.sqrt(1 + y ** 2)))
            log_ms.append(np.log(ms + 1e-16))
            new[f"grad_accum{i}"], new[f"ms{i}"] = m, ms
        mean_log_ms = sum(log_ms) / 4
        x = np.concatenate(scaled + [scaled[0] * scaled[1], scaled[1] * scaled[2], scaled[2] * scaled[3]]
                           + [l - mean_log_ms for l in log_ms] + [s["log_learning_rate"] - mean_log_lr], 1)
        all_features.append(x)
        b0 = (s["layer"] @ w["PerTensor/Layer0_RNN/Param/Affine/Matrix"] + w["PerTensor/Layer0_RNN/Param/Affine/Bias"]
              + global_state @ w["PerTensor/Layer0_RNN/Global/Affine/Matrix"]
              + w["PerTensor/Layer0_RNN/Global/Affine/Bias"])
        h = np_gru(w, "PerTensor/Layer0_RNN", x, s["parameter"], b0)
        b1 = global_state @ w["PerTensor/Layer1_RNN/Affine/Matrix"] + w["PerTensor/Layer1_RNN/Affine/Bias"]
        layer = np_gru(w, "PerTensor/Layer1_RNN", np.concatenate([h, x], 1).mean(0, keepdims=True), s["layer"], b1)
        delta = h @ w["update_weights"] + np.concatenate(scaled, 1) @ w["PerTensor/GradsToDelta/Matrix"]
        delta = delta / np.sqrt(np.mean(delta ** 2) + 1e-16)
        step_log_lr = np.clip(s["log_learning_rate"] + h @ w["learning_rate_weights"] + w["learning_rate_bias"],
                              -33, max_log_lr)
        lrm = sigmoid(w["PerTensor/learning_rate_momentum_logit"])
        new.update(parameter=h, layer=layer,
                   scl_decay=sigmoid(h @ w["scl_decay_weights"] + w["scl_decay_bias"]),
                   inp_decay=sigmoid(h @ w["inp_decay_weights"] + w["inp_decay_bias"]),
                   log_learning_rate=lrm * s["log_learning_rate"] + (1 - lrm) * step_log_lr)
        updates.append((np.exp(step_log_lr + w["PerTensor/param_stepsize_offset"]) * delta).reshape(grad.shape))
        new_states.append(new)
    global_state = np_gru(w, "Layer2_RNN", new_states[-1]["layer"], global_state)  # the last tensor's only
    return updates, new_states, global_state, all_features


def to_numpy_states(state):
    out = []
    for t in state.tensors:
        # the optimizer keeps per-coordinate states feature-major, (k, n): the original's (n, k) transposed
        s = {k: np.asarray(getattr(t, k), np.float64).T for k in ("parameter", "scl_decay", "inp_decay",
                                                                  "log_learning_rate")}
        s["layer"] = np.asarray(t.layer, np.float64)
        for i in range(4):
            s[f"grad_accum{i + 1}"] = np.asarray(t.grad_accum[i:i + 1], np.float64).T
            s[f"ms{i + 1}"] = np.asarray(t.ms[i:i + 1], np.float64).T
        out.append(s)
    return out, np.asarray(state.global_state, np.float64)


def weights_of(opt):
    return {name: var.numpy() for name, var in opt.original_variables().items()}


def random_gradients(rng, scale=1e-2):
    """Gradients of mixed magnitudes (decades apart across coordinates), as an optimizee's are."""
    return [(rng.normal(size=s) * scale * 10.0 ** rng.uniform(-2, 1, size=s)).astype(np.float32) for s in SHAPES]


def perturb_lr_path(opt, rng):
    """Make the learning-rate path non-trivial: the shipped weights keep lr_change at ~1e-9."""
    v = opt.original_variables()
    v["LOL/learning_rate_weights"].assign(rng.normal(0, 0.4, size=(10, 1)).astype(np.float32))
    v["LOL/learning_rate_bias"].assign(np.float32([0.3]))
    v["LOL/PerTensor/learning_rate_momentum_logit"].assign(np.float32(0.5))
    v["LOL/PerTensor/param_stepsize_offset"].assign(np.float32(-0.7))
    v["LOL/inp_decay_bias"].assign(np.float32([0.4]))  # decays far from the defaults, so the timescales differ
    v["LOL/scl_decay_bias"].assign(np.float32([0.1]))


def compare_run(opt, num_steps, seed, max_log_lr=33.0):
    """Run the optimizer and the numpy reference side by side for num_steps; assert every output and state."""
    rng = np.random.default_rng(seed)
    opt.reseed(seed)
    state = opt.initial_state(SHAPES)
    np_states, np_global = to_numpy_states(state)
    weights = weights_of(opt)
    for _ in range(num_steps):
        gradients = random_gradients(rng)
        deltas, state = opt.step([tf.constant(g) for g in gradients], state)
        updates, np_states, np_global, _ = np_step(weights, gradients, np_states, np_global, max_log_lr)
        for delta, update in zip(deltas, updates):
            np.testing.assert_allclose(delta.numpy(), -update, rtol=2e-4, atol=1e-9)
        got, got_global = to_numpy_states(state)
        np.testing.assert_allclose(got_global, np_global, rtol=1e-4, atol=1e-6)
        for g, e in zip(got, np_states):
            for key in e:
                np.testing.assert_allclose(g[key], e[key], rtol=2e-4, atol=1e-6, err_msg=key)
    return state


# -- the structure -----------------------------------------------------------------------------------------------

def test_meta_parameter_count_names_and_initialisers():
    opt = hierarchical_rnn.HierarchicalRNN(seed=1)
    variables = opt.original_variables()
    assert sum(int(np.prod(v.shape)) for v in variables.values()) == 8349
    assert len(opt.trainable_variables) == len(variables) == 31
    w = weights_of(opt)
    assert np.all(w["LOL/PerTensor/Layer0_RNN/BiasGRUCell/gates/Affine/Bias"] == np.float32(2.2))
    assert np.all(w["LOL/scl_decay_bias"] == np.float32(3.2)) and np.all(w["LOL/inp_decay_bias"] == np.float32(2.2))
    assert np.all(w["LOL/learning_rate_weights"] == 0) and w["LOL/PerTensor/param_stepsize_offset"] == -1
    assert w["LOL/PerTensor/learning_rate_momentum_logit"] == np.float32(3.2)
    big = w["LOL/PerTensor/Layer1_RNN/BiasGRUCell/gates/Affine/Matrix"]  # N(0, 0.5/sqrt(42)), 1680 draws
    assert big.shape == (42, 40) and abs(big.std() - 0.5 / math.sqrt(42)) < 0.1 * 0.5 / math.sqrt(42)
    assert np.all(np.abs(w["LOL/Level0_RNN/init_vector"]) <= 1)


def test_matches_the_original_checkpoint_layout():
    _, tensors = checkpoint.read(original_prefix())
    opt = hierarchical_rnn.HierarchicalRNN()
    expected = {n: tuple(a.shape) for n, a in tensors.items() if n.startswith("LOL/") and "RMSProp" not in n}
    assert {n: tuple(v.shape) for n, v in opt.original_variables().items()} == expected


def test_bias_gru_cell_is_a_serializable_keras_rnn_cell():
    cell = hierarchical_rnn.BiasGRUCell(5, seed=2)
    layer = keras.layers.RNN(cell, return_sequences=True)
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    out = layer(x).numpy()
    w = {f"c/BiasGRUCell/{k}": v.numpy().astype(np.float64) for k, v in cell.original_variables().items()}
    h = np.zeros([2, 5])
    for t in range(3):
        h = np_gru(w, "c", x[:, t].astype(np.float64), h)
        np.testing.assert_allclose(out[:, t], h, rtol=1e-5, atol=1e-6)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(cell))
    assert isinstance(clone, hierarchical_rnn.BiasGRUCell) and clone.get_config() == cell.get_config()


# -- one and several steps against numpy ---------------------------------------------------------------------------

def test_steps_match_numpy_with_the_imported_checkpoint():
    opt = l2o_scale.load(original_prefix())
    compare_run(opt, num_steps=3, seed=0)


def test_steps_match_numpy_with_a_non_trivial_learning_rate_path():
    opt = l2o_scale.load(original_prefix())
    perturb_lr_path(opt, np.random.default_rng(1))
    state0 = opt.initial_state(SHAPES)
    state = compare_run(opt, num_steps=4, seed=1)
    # the path is really exercised: the stored log learning rates moved by more than rounding
    moved = [np.abs(t.log_learning_rate - t0.log_learning_rate).max() for t, t0 in zip(state.tensors, state0.tensors)]
    assert min(moved) > 0.05


def test_the_forward_clip_of_the_log_learning_rate():
    opt = hierarchical_rnn.HierarchicalRNN(seed=4, max_log_lr=-6.0)
    perturb_lr_path(opt, np.random.default_rng(4))
    compare_run(opt, num_steps=2, seed=4, max_log_lr=-6.0)


def test_steps_match_numpy_with_fresh_random_weights():
    compare_run(hierarchical_rnn.HierarchicalRNN(seed=7), num_steps=3, seed=7)


def test_features_of_a_hand_worked_gradient_sequence():
    """One coordinate, g = 2 then -2; then decays 1/256 (timescales 1/256, 1/16, 1/4, 1/2) and scale decay 1/2."""
    opt = hierarchical_rnn.HierarchicalRNN(seed=0)
    lr = tf.constant([[-5.0]])
    state = hierarchical_rnn.TensorState(parameter=tf.zeros([10, 1]), layer=tf.zeros([1, 20]),
                                         scl_decay=tf.zeros([1, 1]), inp_decay=tf.zeros([1, 1]),
                                         log_learning_rate=lr, grad_accum=tf.zeros([4, 1]), ms=tf.zeros([4, 1]))
    x, scaled, accum, ms = opt.features(tf.constant([[2.0]]), state, -6.0)
    a1 = math.asinh(1.0)  # first step: every momentum is g, every ms is g^2 (+1e-12)
    np.testing.assert_allclose(x.numpy()[:, 0], [a1] * 4 + [a1 * a1] * 3 + [0.0] * 4 + [1.0], rtol=1e-6, atol=1e-6)
    state = state._replace(scl_decay=tf.constant([[0.5]]), inp_decay=tf.constant([[1 / 256]]), grad_accum=accum, ms=ms)
    x, _, accum, ms = opt.features(tf.constant([[-2.0]]), state, -5.5)
    m = [-2 + 4 / 256, -2 + 4 / 16, -2 + 4 / 4, 0.0]  # (1 - d) * (-2) + d * 2
    mean_sq = [0.5 * v * v + 0.5 * 4 for v in m]
    s = [math.asinh(v / math.sqrt(q)) for v, q in zip(m, mean_sq)]
    logs = [math.log(q) for q in mean_sq]
    expected = s + [s[0] * s[1], s[1] * s[2], s[2] * s[3]] + [l - sum(logs) / 4 for l in logs] + [0.5]
    np.testing.assert_allclose(accum.numpy()[:, 0], m, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ms.numpy()[:, 0], mean_sq, rtol=1e-6)
    np.testing.assert_allclose(x.numpy()[:, 0], expected, rtol=1e-5, atol=1e-6)


def test_first_step_rule_is_per_tensor_and_scale():
    """A scale whose ms is all zero takes g^2 undecayed; a scale with any non-zero entry decays (§1.5)."""
    opt = hierarchical_rnn.HierarchicalRNN(seed=0)
    ms = tf.constant([[0.0, 0.0], [0.0, 9.0], [0.0, 0.0], [0.0, 0.0]])  # scales x coordinates
    state = hierarchical_rnn.TensorState(tf.zeros([10, 2]), tf.zeros([1, 20]), tf.fill([1, 2], 0.5),
                                         tf.zeros([1, 2]), tf.zeros([1, 2]), tf.zeros([4, 2]), ms)
    _, _, _, new_ms = opt.features(tf.constant([[1.0, 2.0]]), state, 0.0)
    np.testing.assert_allclose(new_ms.numpy()[0], [1.0, 4.0], rtol=1e-6)  # all zero: no decay
    np.testing.assert_allclose(new_ms.numpy()[1], [0.5, 0.5 * 4 + 0.5 * 9], rtol=1e-6)


def test_initial_state_and_its_seed():
    opt = hierarchical_rnn.HierarchicalRNN(seed=3, init_lr_range=(1e-6, 1e-2))
    opt.reseed(5)
    a = opt.initial_state(SHAPES)
    opt.reseed(5)
    b = opt.initial_state(SHAPES)
    c = opt.initial_state(SHAPES)
    for x, y, z in zip(a.tensors, b.tensors, c.tensors):
        np.testing.assert_array_equal(x.log_learning_rate, y.log_learning_rate)
        assert not np.array_equal(x.log_learning_rate, z.log_learning_rate)
        lr = x.log_learning_rate.numpy()
        assert lr.min() >= math.log(1e-6) and lr.max() <= math.log(1e-2)
        np.testing.assert_array_equal(x.parameter, np.tile(opt.original_variables()["LOL/Level0_RNN/init_vector"],
                                                           [lr.shape[1], 1]).T)
    same = hierarchical_rnn.HierarchicalRNN(seed=3, init_lr_range=(1e-3, 1e-3)).initial_state(SHAPES)
    np.testing.assert_allclose(same.tensors[0].log_learning_rate, math.log(1e-3), rtol=1e-6)
    opt.reseed(5)  # inside tf.function, the same draws as eagerly
    compiled = tf.function(lambda: opt.initial_state(SHAPES))()
    np.testing.assert_allclose(compiled.tensors[2].log_learning_rate, a.tensors[2].log_learning_rate, rtol=1e-6)
    given = tf.random.Generator.from_seed(1)
    assert not np.array_equal(opt.initial_state(SHAPES, rng=given).tensors[0].log_learning_rate,
                              a.tensors[0].log_learning_rate)


def test_documented_fixes_change_what_they_say():
    opt = hierarchical_rnn.HierarchicalRNN(seed=9)
    mean = hierarchical_rnn.HierarchicalRNN(seed=9, global_input="mean")
    smooth = hierarchical_rnn.HierarchicalRNN(seed=9, step_lr="smoothed")
    for o in (opt, mean, smooth):
        perturb_lr_path(o, np.random.default_rng(9))
    gradients = [tf.constant(g) for g in random_gradients(np.random.default_rng(9))]
    outs = []
    for o in (opt, mean, smooth):
        o.reseed(1)
        outs.append(o.step(gradients, o.initial_state(SHAPES)))
    (d0, s0), (d1, s1), (d2, s2) = outs
    np.testing.assert_array_equal(d0[0], d1[0])  # the global state is used only from the next step on
    init_global = opt.original_variables()["LOL/Level2_RNN/init_vector"]
    np.testing.assert_allclose(s0.global_state, opt.cells[2](s0.tensors[-1].layer, [init_global])[0], rtol=1e-6)
    layers = tf.reduce_mean(tf.concat([t.layer for t in s1.tensors], 0), 0, keepdims=True)
    np.testing.assert_allclose(s1.global_state, mean.cells[2](layers, [init_global])[0], rtol=1e-6)
    assert np.abs(s1.global_state - s0.global_state).max() > 1e-3
    # smoothed: exp(new_log_lr + offset) instead of exp(step_log_lr + offset); new - step = -lrm * lr_change
    w = weights_of(opt)
    h = s0.tensors[0].parameter.numpy().T
    lr_change = h @ w["LOL/learning_rate_weights"] + w["LOL/learning_rate_bias"]
    lrm = 1 / (1 + math.exp(-float(w["LOL/PerTensor/learning_rate_momentum_logit"])))
    np.testing.assert_allclose(d2[0].numpy().reshape(-1, 1), d0[0].numpy().reshape(-1, 1) * np.exp(-lrm * lr_change),
                               rtol=1e-4)
    with pytest.raises(ValueError, match="global_input"):
        hierarchical_rnn.HierarchicalRNN(global_input="sum")


def test_compiled_step_equals_eager_and_keeps_the_state_structure():
    opt = hierarchical_rnn.HierarchicalRNN(seed=11)
    perturb_lr_path(opt, np.random.default_rng(11))
    state = opt.initial_state(SHAPES)
    gradients = [tf.constant(g) for g in random_gradients(np.random.default_rng(11))]
    eager = opt.step(gradients, state)
    compiled = tf.function(opt.step)(gradients, state)
    tf.nest.map_structure(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), eager, compiled)
    tf.nest.assert_same_structure(state, eager[1])
    assert [t.shape for t in tf.nest.flatten(state)] == [t.shape for t in tf.nest.flatten(eager[1])]


def test_finite_meta_gradient_through_a_short_unroll():
    rng = np.random.default_rng(0)
    data = (rng.uniform(size=(64, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, size=64).astype(np.int32))
    problem = problems.get("mnist", "train", dataset=data)
    opt = hierarchical_rnn.HierarchicalRNN(seed=0)
    trainer = meta.Trainer(problem, opt, tf.random.Generator.from_seed(0), unroll_length=2)
    meta_loss, gradients = trainer.meta_gradient(trainer.new_trajectory())
    assert np.isfinite(float(meta_loss))
    named = dict(zip([v.path for v in trainer.variables], gradients))
    computed = [g for g in gradients if g is not None]
    assert len(computed) >= 25 and all(np.all(np.isfinite(g)) for g in computed)
    lr_weights = opt.original_variables()["LOL/learning_rate_weights"]
    assert np.abs(named[lr_weights.path]).max() > 0  # the learning-rate path carries meta-gradient
    before = lr_weights.numpy()
    _, meta_loss, _, applied = trainer.train_unroll(trainer.new_trajectory())  # compiled, with the meta-Adam step
    assert applied and np.isfinite(meta_loss) and not np.array_equal(lr_weights.numpy(), before)


def test_wrong_gradients_are_clear_errors():
    opt = hierarchical_rnn.HierarchicalRNN(seed=0)
    state = opt.initial_state(SHAPES)
    with pytest.raises(ValueError, match="4 tensors"):
        opt.step([tf.zeros(s) for s in SHAPES[:3]], state)
    with pytest.raises(TypeError, match="float32"):
        opt.step([tf.zeros(s, tf.float64) for s in SHAPES], state)


# -- checkpoints ---------------------------------------------------------------------------------------------------

def test_import_reads_every_variable_by_name():
    path = original_prefix()
    opt = l2o_scale.load(path)
    _, tensors = checkpoint.read(path)
    for name, var in opt.original_variables().items():
        np.testing.assert_array_equal(var.numpy(), tensors[name])
    assert int(tensors["global_step"]) == 6  # a 6-step smoke test (l2o_tf/pretrained/README.md)
    for other in (os.path.dirname(path), "scale_smoke"):  # its directory, its shipped name
        np.testing.assert_array_equal(l2o_scale.load(other).original_variables()["LOL/update_weights"].numpy(),
                                      tensors["LOL/update_weights"])
    assert l2o_scale.load(path, init_lr_range=(1e-5, 1e-3)).init_lr_range == (1e-5, 1e-3)


def test_save_round_trip_is_bit_exact_with_original_names(tmp_path):
    path = original_prefix()
    opt = l2o_scale.load(path)
    _, original = checkpoint.read(path)
    slots = {n: a for n, a in original.items() if "RMSProp" in n or n == "global_step"}
    prefix = checkpoint.save(opt, tmp_path / "run" / "model.ckpt-3", extra=slots)
    reader = tf.train.load_checkpoint(prefix)  # plain TF reading, as the original's Saver would
    assert set(reader.get_variable_to_shape_map()) == set(original)
    for name, value in original.items():
        assert reader.get_tensor(name).tobytes() == value.tobytes(), name
    again = l2o_scale.load(tmp_path / "run")  # through the directory's `checkpoint` file
    for name, var in again.original_variables().items():
        assert var.numpy().tobytes() == original[name].tobytes()
    with open(tmp_path / "run" / "checkpoint") as f:
        assert 'model_checkpoint_path: "model.ckpt-3"' in f.read()


def test_save_keeps_the_config(tmp_path):
    opt = hierarchical_rnn.HierarchicalRNN(seed=5, global_input="mean", init_lr_range=(1e-4, 1e-3))
    prefix = checkpoint.save(opt, tmp_path / "model.ckpt-0")
    loaded = l2o_scale.load(prefix)
    assert loaded.global_input == "mean" and loaded.init_lr_range == (1e-4, 1e-3)
    for name, var in opt.original_variables().items():
        np.testing.assert_array_equal(loaded.original_variables()[name], var)
    assert l2o_scale.load(prefix, global_input="last").global_input == "last"
    with pytest.raises(errors.L2OError, match="cannot build"):
        l2o_scale.load(prefix, no_such_option=1)


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    opt = hierarchical_rnn.HierarchicalRNN(seed=5)
    tensors = {n: v.numpy() for n, v in opt.original_variables().items()}
    missing = dict(tensors)
    del missing["LOL/update_weights"]
    with pytest.raises(checkpoint.CheckpointError, match="missing L2O-Scale variable.*LOL/update_weights"):
        checkpoint.assign(opt, missing)
    wrong = dict(tensors, **{"LOL/update_weights": np.zeros([20, 1], np.float32)})
    with pytest.raises(checkpoint.CheckpointError, match=r"LOL/update_weights has shape \[20, 1\]"):
        checkpoint.assign(opt, wrong)
    # a checkpoint file missing a variable, read from disk
    small = hierarchical_rnn.HierarchicalRNN(seed=5, level_sizes=(10, 20, 12))
    prefix = checkpoint.save(small, tmp_path / "other" / "model.ckpt-0")
    with pytest.raises(checkpoint.CheckpointError, match="has shape"):
        l2o_scale.load(prefix, level_sizes=(10, 20, 20))
    with pytest.raises(checkpoint.CheckpointError, match="no such checkpoint"):
        l2o_scale.load(tmp_path / "nothing" / "model.ckpt-0")
    (tmp_path / "junk.index").write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match="not a readable TensorFlow checkpoint"):
        l2o_scale.load(tmp_path / "junk")
    (tmp_path / "empty").mkdir()
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        l2o_scale.load(tmp_path / "empty")
    assert issubclass(checkpoint.CheckpointError, errors.L2OError)


def test_keras_model_fit_with_the_learned_optimizer():
    from l2o_tf.keras_optimizer import LearnedOptimizer  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 8)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(1)])
    opt = hierarchical_rnn.HierarchicalRNN(seed=0, init_lr_range=(1e-2, 1e-2))
    model.compile(optimizer=LearnedOptimizer(opt), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    losses = model.fit(x, y, epochs=4, batch_size=32, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.9 * losses[0]


def test_a_guard_wraps_the_learned_optimizer():
    from l2o_tf import guards  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(3)
    data = (rng.uniform(size=(64, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, size=64).astype(np.int32))
    problem = problems.get("mnist", "test", dataset=data)
    opt = hierarchical_rnn.HierarchicalRNN(seed=3, init_lr_range=(1e-2, 1e-2))
    guarded, view = guards.guard_problem(problem, opt, 3, "lgl2o", guard_optimizer="sgd", guard_learning_rate=0.5)
    generator = tf.random.Generator.from_seed(3)
    params = problem.init_params(generator)
    state, learned_state = guarded.initial_state(params), opt.initial_state(params)
    for _ in range(2):
        loss, gradients = meta.loss_and_gradient(view, params, (), [1.0] * len(params), generator)
        deltas, state = guarded.step(gradients, state, loss)
        learned, learned_state = opt.step(gradients, learned_state)
        sgd = [-0.5 * g for g in gradients]
        chosen = learned if float(guarded.record(state)) > 0.5 else sgd  # whichever candidate LGL2O took
        for d, c in zip(deltas, chosen):
            np.testing.assert_allclose(d, c, rtol=1e-6, atol=1e-9)
        params = meta.add(params, deltas)
