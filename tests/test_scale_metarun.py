"""L2O-Scale meta-training (SPEC_SCALE §2.2, §3, §4): each piece against a numpy re-implementation of the spec."""
import glob
import json
import logging
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import mnist_on_random_images
from l2o_scale import checkpoint, config as scale_config, meta_objective, meta_optimizer, meta_training, plans, unroll
from l2o_tf import curriculum, errors


# -- §2.2 the meta-objective -------------------------------------------------------------------------------------

def np_meta_objective(F, f0, log=True, numerator_epsilon=False):
    F = np.asarray(F, np.float64)
    if not log:
        T = len(F) - 1
        return sum(F[1 + t] / T for t in range(T)) / (f0 + 1e-6)
    if numerator_epsilon:
        return np.mean([math.log((f + 1e-6) / (f0 + 1e-6)) for f in F])
    return np.mean([math.log(f / (f0 + 1e-6) + 1e-6) for f in F])


@pytest.mark.parametrize("log,numerator_epsilon", [(True, False), (True, True), (False, False)])
def test_meta_objective_matches_the_formula(log, numerator_epsilon):
    rng = np.random.default_rng(0)
    F = rng.uniform(0.1, 5.0, size=8)
    F[1] = F[0]
    f0 = 3.7
    got = meta_objective.meta_objective(tf.constant(F, tf.float64), tf.constant(f0, tf.float64), log,
                                        numerator_epsilon)
    np.testing.assert_allclose(float(got), np_meta_objective(F, f0, log, numerator_epsilon), rtol=1e-12)


def test_meta_objective_epsilons_matter_where_the_spec_puts_them():
    """A zero loss: log(0/(f0+eps) + eps) = log(1e-6) in the default form, log(1e-6/(f0+eps)) with the numerator
    epsilon; a zero f0 is guarded by the denominator's epsilon."""
    zero = tf.constant([0.0, 0.0], tf.float64)
    np.testing.assert_allclose(float(meta_objective.meta_objective(zero, 2.0)), math.log(1e-6), rtol=1e-12)
    np.testing.assert_allclose(float(meta_objective.meta_objective(zero, 2.0, use_numerator_epsilon=True)),
                               math.log(1e-6 / (2.0 + 1e-6)), rtol=1e-12)
    one = tf.constant([1.0, 1.0, 1.0], tf.float64)
    np.testing.assert_allclose(float(meta_objective.meta_objective(one, 0.0)), math.log(1e6 + 1e-6), rtol=1e-12)
    np.testing.assert_allclose(float(meta_objective.meta_objective(one, 0.0, use_log_objective=False)), 1e6,
                               rtol=1e-12)


# -- §3.4 the meta-optimizer ---------------------------------------------------------------------------------------

def np_tf1_rmsprop(w, gradients, lr, decay=0.9, momentum=0.0, epsilon=1e-20):
    w, ms, mom = np.array(w, np.float64), np.ones_like(w, np.float64), np.zeros_like(w, np.float64)
    for g in gradients:
        ms = decay * ms + (1 - decay) * g ** 2
        mom = momentum * mom + lr * g / np.sqrt(ms + epsilon)
        w = w - mom
    return w, ms, mom


def run_keras_optimizer(optimizer, w0, gradients):
    variable = tf.Variable(w0)
    optimizer.build([variable])
    for g in gradients:
        optimizer.apply_gradients([(tf.constant(g), variable)])
    return variable.numpy(), [v.numpy() for v in optimizer.variables]


@pytest.mark.parametrize("num_steps", [1, 5])
def test_tf1_rmsprop_matches_numpy(num_steps):
    """The original's settings: ms starts at 1, so tiny meta-gradients give steps of about lr * g."""
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=[3, 4]).astype(np.float32)
    gradients = [(rng.normal(size=[3, 4]) * 10.0 ** rng.integers(-8, 2, size=[3, 4])).astype(np.float32)
                 for _ in range(num_steps)]
    lr = 0.05  # large enough for the change to show in float32
    w, slots = run_keras_optimizer(meta_optimizer.TF1RMSProp(lr), w0, gradients)
    expected_w, expected_ms, expected_mom = np_tf1_rmsprop(w0, gradients, lr)
    np.testing.assert_allclose(w, expected_w, rtol=1e-6, atol=1e-7)
    ms, mom = slots[-2:]
    np.testing.assert_allclose(ms, expected_ms, rtol=1e-6)
    np.testing.assert_allclose(mom, expected_mom, rtol=1e-5, atol=1e-12)
    assert int(slots[0]) == num_steps  # the iteration counter (the original's global_step)


def test_tf1_rmsprop_epsilon_inside_the_root_and_momentum():
    """epsilon=0.5 tells the two placements apart: lr g / sqrt(ms + 0.5), not lr g / (sqrt(ms) + 0.5)."""
    w0 = np.array([1.0, -2.0, 0.5], np.float32)
    gradients = [np.array([0.3, -1.5, 2.0], np.float32), np.array([1.0, 0.2, -0.7], np.float32)]
    optimizer = meta_optimizer.TF1RMSProp(0.1, decay=0.8, momentum=0.6, epsilon=0.5)
    w, _ = run_keras_optimizer(optimizer, w0, gradients)
    expected, _, _ = np_tf1_rmsprop(w0, gradients, 0.1, decay=0.8, momentum=0.6, epsilon=0.5)
    np.testing.assert_allclose(w, expected, rtol=1e-6)


def test_tf1_rmsprop_defaults_are_the_originals():
    optimizer = meta_optimizer.TF1RMSProp()
    assert (float(optimizer.learning_rate), optimizer.decay, optimizer.momentum, optimizer.epsilon) == \
        pytest.approx((1e-6, 0.9, 0.0, 1e-20), rel=1e-6)
    w, _ = run_keras_optimizer(optimizer, np.zeros([2], np.float32), [np.array([1e-8, -1e-8], np.float32)])
    # ms = 0.9 * 1 + 0.1 * 1e-16: the step is lr * g / sqrt(0.9), about 1e-14
    np.testing.assert_allclose(w, np.array([-1e-14, 1e-14]) / math.sqrt(0.9), rtol=1e-5)


def test_sanitize_zeroes_non_finite_and_clips_each_element():
    g = tf.constant([np.nan, np.inf, -np.inf, 2e4, -3e4, 5.0, -1e4])
    variables = [tf.Variable(tf.zeros([7])), tf.Variable(tf.ones([2, 3]))]
    got, missing = meta_optimizer.sanitize([g, None], variables, 1e4)
    np.testing.assert_array_equal(got.numpy(), [0, 0, 0, 1e4, -1e4, 5.0, -1e4])
    np.testing.assert_array_equal(missing.numpy(), np.zeros([2, 3]))


# -- §3.2 unroll plans ---------------------------------------------------------------------------------------------

def test_sample_numiter_is_a_clipped_rounded_exponential():
    """Train copy: int(clip(round(Exp(scale)) + min, 0, 3 min)); P(cap) = P(Exp >= 2 min - 0.5) = exp(-19.5 / scale)."""
    rng = np.random.default_rng(2)
    for scale, expected_cap in ((40, math.exp(-19.5 / 40)), (20, math.exp(-19.5 / 20))):
        draws = np.array([plans.sample_numiter(rng, scale, 10) for _ in range(20000)])
        assert draws.min() == 10 and draws.max() == 30
        assert abs(np.mean(draws == 30) - expected_cap) < 0.015
        assert abs(np.mean(draws == 10) - (1 - math.exp(-0.5 / scale))) < 0.01  # round(e) == 0
    unclipped = np.array([plans.sample_numiter(rng, 200, 50, clip=False) for _ in range(5000)])
    assert unclipped.min() == 50 and unclipped.max() > 150
    assert abs(unclipped.mean() - 250) < 10


def test_unroll_plans_of_the_three_modes():
    rng = np.random.default_rng(3)
    settings = plans.UnrollSettings()
    assert plans.unroll_plan(rng, plans.UnrollSettings(fix_unroll=True)) == [20] * 5
    assert plans.unroll_plan(rng, plans.UnrollSettings(fix_unroll=True, fix_unroll_length=7, fix_num_steps=50)) \
        == [7] * 7
    assert plans.unroll_plan(rng, settings, curriculum_unrolls=25) == [20] * 25  # the curriculum takes precedence
    assert [plans.curriculum_unrolls(s, 20) for s in (100, 200, 500, 5000)] == [5, 10, 25, 250]
    drawn = [plans.unroll_plan(rng, settings) for _ in range(300)]
    assert all(10 <= len(p) <= 30 and all(10 <= t <= 30 for t in p) for p in drawn)
    assert len({len(p) for p in drawn}) > 5 and len({t for p in drawn for t in p}) > 5


# -- §3.3 data subsets and minibatches -----------------------------------------------------------------------------

def assert_shuffled_epochs(batches, size):
    """Each run of size // batch consecutive batches holds distinct indices (one pass over a shuffled order)."""
    per_epoch = size // batches.shape[1]
    for start in range(0, len(batches), per_epoch):
        epoch = batches[start:start + per_epoch].ravel()
        assert len(set(epoch.tolist())) == len(epoch)


def test_batch_indices_are_full_batches_of_reshuffled_epochs():
    batches = plans.batch_indices(np.random.default_rng(4), 10, 9, 3)
    assert batches.shape == (9, 3) and batches.min() >= 0 and batches.max() < 10
    assert_shuffled_epochs(batches, 10)  # 3 batches per pass, the 10th index left over
    assert len({tuple(b) for b in batches}) > 3
    with pytest.raises(ValueError):
        plans.batch_indices(np.random.default_rng(0), 5, 1, 6)


@pytest.mark.parametrize("k", [1, 3])
def test_iteration_data_subsets_and_chunks(k):
    plan, dataset_size, batch, subset_size = [4, 6, 5], 1000, 16, 200
    data = plans.iteration_data(np.random.default_rng(5), plan, dataset_size, batch, subset_size, k=k)
    positions = []
    for subset, batches, teacher, steps in zip(data.subsets, data.batches, data.teacher_batches, plan):
        assert subset.shape == (subset_size,) and len(set(subset.tolist())) == subset_size
        assert subset.max() < dataset_size
        assert teacher.shape == (steps * k, batch) and batches.shape == (steps, batch)
        np.testing.assert_array_equal(batches, teacher[::k])  # the learned optimizer's: every k-th
        lookup = {index: position for position, index in enumerate(subset.tolist())}
        positions.append(np.vectorize(lookup.__getitem__)(teacher))  # KeyError if a batch left its subset
    assert not all(np.array_equal(data.subsets[0], s) for s in data.subsets[1:])
    assert_shuffled_epochs(np.concatenate(positions), subset_size)  # one stream of batches across unrolls
    frozen = plans.iteration_data(np.random.default_rng(5), plan, dataset_size, batch, subset_size, freeze=True)
    assert all(np.array_equal(s, np.arange(subset_size)) for s in frozen.subsets)
    small = plans.iteration_data(np.random.default_rng(5), [3], 50, 16)  # fewer examples than a subset
    assert sorted(small.subsets[0].tolist()) == list(range(50))


def test_validation_batches_stay_in_the_subset():
    subset = np.random.default_rng(6).permutation(500)[:100]
    batches = plans.validation_batches(np.random.default_rng(7), subset, [20, 20, 20], 8)
    assert [b.shape for b in batches] == [(20, 8)] * 3
    assert set(np.concatenate(batches).ravel().tolist()) <= set(subset.tolist())


def test_optimizee_init_is_standard_normal():
    params = plans.optimizee_init(np.random.default_rng(8), [(784, 20), (20,), (20, 10), (10,)])
    assert [p.shape for p in params] == [(784, 20), (20,), (20, 10), (10,)]
    assert all(p.dtype == np.float32 for p in params)
    flat = np.concatenate([p.ravel() for p in params])
    assert abs(flat.mean()) < 0.03 and abs(flat.std() - 1) < 0.03


# -- §2.1-§2.2, §3.5 the unrolls, on a rule numpy can replay -------------------------------------------------------


class MomentumRule(keras.layers.Layer):
    """delta = -exp(log_lr) m', m' = 0.5 m + g, the momentum starting at the learned `init` in every coordinate."""

    def build(self, input_shape=None):
        self.log_lr = self.add_weight(shape=(), initializer=keras.initializers.Constant(-2.0), name="log_lr")
        self.init = self.add_weight(shape=(), initializer=keras.initializers.Constant(0.3), name="init")
        self.unused = self.add_weight(shape=(2,), initializer="ones", name="unused")
        self.built = True

    def initial_state(self, params):
        return [tf.ones_like(p) * self.init for p in params]

    def step(self, gradients, state, loss=None):
        state = [0.5 * m + g for m, g in zip(state, gradients)]
        return [-tf.exp(self.log_lr) * m for m in state], state


def np_mlp_loss_and_gradient(params, x, y):
    w1, b1, w2, b2 = params
    h = 1 / (1 + np.exp(-(x @ w1 + b1)))
    z = h @ w2 + b2
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    loss = np.mean(-np.log(p[np.arange(len(y)), y]))
    dz = (p - np.eye(10)[y]) / len(y)
    dh = dz @ w2.T * h * (1 - h)
    return loss, [x.T @ dh, dh.sum(0), h.T @ dz, dz.sum(0)]


def np_unroll(params, momentum, log_lr, images, labels, subset, batches, f0, log=True):
    """(objectives [T + 1], meta-objective, params_T) of one unroll, in float64."""
    x, y = images.reshape(len(images), -1).astype(np.float64), labels
    objectives = []
    for batch in batches:
        objectives.append(np_mlp_loss_and_gradient(params, x[subset], y[subset])[0])
        _, gradients = np_mlp_loss_and_gradient(params, x[batch], y[batch])
        momentum = [0.5 * m + g for m, g in zip(momentum, gradients)]
        params = [p - np.exp(log_lr) * m for p, m in zip(params, momentum)]
    objectives = [objectives[0]] + objectives
    return np.array(objectives), np_meta_objective(objectives, f0, log), params


@pytest.fixture(scope="module")
def small_mnist():
    return mnist_on_random_images(300, seed=10)


def small_plan(problem, steps, seed=11):
    rng = np.random.default_rng(seed)
    data = plans.iteration_data(rng, [steps], 300, 16, subset_size=200)
    params = plans.optimizee_init(rng, problem.param_shapes)
    return data.subsets[0], data.batches[0], [0.1 * p for p in params]


def make_unroller(problem, second_derivatives=False, learning_rate=1e-6, **kwargs):
    rule = MomentumRule()
    rule.build()
    return unroll.Unroller(problem, rule, meta_optimizer.TF1RMSProp(learning_rate), second_derivatives, **kwargs)


@pytest.mark.parametrize("log", [True, False])
def test_unroll_objectives_and_meta_objective_match_numpy(small_mnist, log):
    """T = 4: F = [f(x_0), f(x_0), f(x_1), f(x_2), f(x_3)] on the whole subset, the steps on minibatches; f_0 given."""
    u = make_unroller(small_mnist, use_log_objective=log)
    subset, batches, params = small_plan(small_mnist, 4)
    state = [tf.zeros_like(p) for p in params]  # replaced by the fresh one
    objective, objectives, params_t, _ = u.forward([tf.constant(p) for p in params], state, tf.constant(subset),
                                                   tf.constant(batches), tf.constant(7.5), tf.constant(True))
    images, labels = small_mnist.images.numpy(), small_mnist.labels.numpy()
    momentum = [np.full(p.shape, 0.3) for p in params]
    expected = np_unroll([p.astype(np.float64) for p in params], momentum, -2.0, images, labels, subset, batches,
                         7.5, log)
    assert objectives.shape == (5,) and objectives[0] == objectives[1]
    np.testing.assert_allclose(objectives.numpy(), expected[0], rtol=2e-5)
    np.testing.assert_allclose(float(objective), expected[1], rtol=2e-5)
    for got, want in zip(params_t, expected[2]):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-6)
    assert u.initial_objective(params, subset) == pytest.approx(expected[0][0], rel=2e-5)


def test_meta_gradient_matches_finite_differences(small_mnist):
    """With second derivatives, d(meta-objective)/d(log_lr, init) equals central differences of the numpy unroll;
    without them the forward is the same and the gradient only slightly different; an unused weight gets 0."""
    subset, batches, params = small_plan(small_mnist, 3)
    images, labels = small_mnist.images.numpy(), small_mnist.labels.numpy()
    params64 = [p.astype(np.float64) for p in params]

    def np_objective(log_lr, init):
        momentum = [np.full(p.shape, init) for p in params]
        return np_unroll(params64, momentum, log_lr, images, labels, subset, batches, 3.0)[1]

    h = 1e-5
    expected = [(np_objective(-2.0 + h, 0.3) - np_objective(-2.0 - h, 0.3)) / (2 * h),
                (np_objective(-2.0, 0.3 + h) - np_objective(-2.0, 0.3 - h)) / (2 * h)]
    args = ([tf.constant(p) for p in params], None, tf.constant(subset), tf.constant(batches), tf.constant(3.0))
    exact = make_unroller(small_mnist, second_derivatives=True).meta_gradient(*args)
    np.testing.assert_allclose([float(exact[0]), float(exact[1])], expected, rtol=2e-3)
    np.testing.assert_array_equal(exact[2].numpy(), [0.0, 0.0])
    first_order = make_unroller(small_mnist, second_derivatives=False).meta_gradient(*args)
    np.testing.assert_allclose([float(g) for g in first_order[:2]], expected, rtol=0.2)
    assert float(first_order[0]) != pytest.approx(float(exact[0]), rel=1e-4)


def test_l2_reg_adds_twice_its_weight_times_the_meta_parameters(small_mnist):
    subset, batches, params = small_plan(small_mnist, 2)
    args = ([tf.constant(p) for p in params], None, tf.constant(subset), tf.constant(batches), tf.constant(3.0))
    plain = make_unroller(small_mnist).meta_gradient(*args)
    regularised = make_unroller(small_mnist, l2_reg=0.5).meta_gradient(*args)
    weights = [-2.0, 0.3, np.ones(2)]  # MomentumRule's log_lr, init, unused
    for g, r, w in zip(plain, regularised, weights):
        np.testing.assert_allclose(r.numpy(), g.numpy() + 2 * 0.5 * np.asarray(w), rtol=1e-4, atol=1e-6)


def test_train_unroll_applies_tf1_rmsprop_and_carries_the_state(small_mnist):
    """A carried state gives the initial vector no gradient (but 0: its ms slot still decays); the update is
    -lr g / sqrt(0.9 + 0.1 g^2); the returned trajectory is the forward's own."""
    u = make_unroller(small_mnist, learning_rate=1.0)
    subset, batches, params = small_plan(small_mnist, 3)
    state = [tf.fill(p.shape, 0.7) for p in params]
    args = ([tf.constant(p) for p in params], state, tf.constant(subset), tf.constant(batches), tf.constant(3.0))
    gradients = [g.numpy() for g in u.meta_gradient(*args)]
    _, _, expected_params, expected_state = u.forward(*args, tf.constant(False))
    before = [v.numpy() for v in u.variables]
    params_t, state_t, objectives, _ = u.train_unroll(params, state, subset, batches, 3.0)
    assert gradients[1] == 0.0 and gradients[0] != 0.0
    for old, var, g in zip(before, u.variables, gradients):
        np.testing.assert_allclose(var.numpy() - old, -g / np.sqrt(0.9 + 0.1 * g ** 2), rtol=1e-5, atol=3e-7)
    ms = [v.numpy() for v in u.meta_optimizer.variables if "ms" in v.name]
    np.testing.assert_allclose(ms[1], 0.9)  # the unconnected initial vector's slot decayed like the original's
    for got, want in zip(params_t + state_t, expected_params + expected_state):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-8)
    assert objectives.shape == (4,)


def test_validation_cost_is_the_subset_loss_before_the_last_update(small_mnist):
    """Two unrolls of 3 and 2 steps: the cost is f(theta_4), the run's last objective."""
    u = make_unroller(small_mnist)
    subset, batches, params = small_plan(small_mnist, 5)
    images, labels = small_mnist.images.numpy(), small_mnist.labels.numpy()
    momentum = [np.full(p.shape, 0.3) for p in params]
    # the numpy unroll's objectives end with f(theta_4) = f before the 5th update
    expected = np_unroll([p.astype(np.float64) for p in params], momentum, -2.0, images, labels, subset, batches,
                         1.0)[0][-1]
    assert u.validation_cost(params, None, subset, [batches[:3], batches[3:]]) == pytest.approx(expected, rel=2e-5)


# -- §3-§4 end to end: curriculum, imitation, files, resume ----------------------------------------------------------



def tiny_config(train_dir, **overrides):
    """CL over 6, 9, 12 steps in unrolls of 3, imitation half of the time, one validation run, subsets of 200."""
    values = dict(train_dir=str(train_dir), if_cl=True, if_mt=True, mt_ratio=0.5, fix_unroll=True,
                  fix_unroll_length=3, num_steps_schedule=(6, 9, 12), num_meta_iterations=4, evaluation_epochs=1,
                  mini_batch_size=200, use_second_derivatives=False, meta_learning_rate=1e-3, seed=3,
                  min_num_eval=2, jit_compile=False)  # an XLA compile would cost more than these validations
    values.update(overrides)
    return scale_config.ScaleConfig(**values)


@pytest.fixture(scope="module")
def mnist_600():
    return mnist_on_random_images(600, seed=12)


def test_tiny_metarun_with_curriculum_and_imitation_then_resume(mnist_600, tmp_path):
    first = meta_training.ScaleTraining(tiny_config(tmp_path, num_meta_iterations=3), mnist_600)
    initial = {name: v.numpy().copy() for name, v in first.cell.original_variables().items()}
    first.run()
    assert first.epoch == 3 and not first.resumed
    resumed = meta_training.ScaleTraining(tiny_config(tmp_path, num_meta_iterations=6), mnist_600)
    assert resumed.resumed and resumed.epoch == 3
    updates = int(resumed.iterations.meta_optimizer.iterations)
    assert updates == int(first.iterations.meta_optimizer.iterations) > 0
    resumed.run()
    logdir = tmp_path / scale_config.LOGDIR_NAME
    history = json.loads((logdir / "history.json").read_text())
    epochs = [r for r in history if r["kind"] in ("train", "imitation[adam]")]
    assert [r["epoch"] for r in epochs] == list(range(1, resumed.epoch + 1))
    assert {r["kind"] for r in epochs} == {"train", "imitation[adam]"}
    # one meta-update per unroll: training and imitation share the RMSProp and its iteration counter
    assert int(resumed.iterations.meta_optimizer.iterations) == updates + sum(
        r["applied"] for r in epochs if r["epoch"] > 3)
    # the curriculum's decisions are the state machine's on the recorded costs (restart at each new stage)
    replay = curriculum.Curriculum((6, 9, 12), min_num_eval=2)
    for record in history:
        if record["kind"] == "validation":
            assert replay.observe(record["validation_loss_sum"]) == record["decision"]
            assert record["stage"] == replay.stage and record["validation_loss_mean"] == record["validation_loss_sum"]
            assert record["steps"] == replay.valid_steps or record["decision"] == curriculum.ADVANCE
        elif record["kind"] == "stage":
            replay.start_stage(record["baseline_loss_sum"])
    assert any(r.get("decision") == curriculum.IMPROVED for r in history)
    # files: the best model in the original's TF1 format, loadable, trained (moved), with RMSProp slots
    assert (logdir / "model.ckpt-0.index").exists() and (logdir / "checkpoint").exists()
    best = checkpoint.load(str(logdir / "model.ckpt-0"))
    assert any(np.any(v.numpy() != initial[name]) for name, v in best.original_variables().items())
    moved = max(np.max(np.abs(v.numpy() - initial[name])) for name, v in resumed.cell.original_variables().items())
    assert moved > 1e-6  # steps of ~lr * g: the mean square starts at 1
    _, tensors = checkpoint.read(str(logdir / "model.ckpt-0"))
    assert int(tensors["global_step"]) > 0
    assert np.all(tensors["LOL/update_weights/RMSProp"] < 1.0)  # ms started at 1 and decayed with the updates


def test_resume_refuses_a_changed_run_takes_the_runs_seed_and_a_finished_run_stays_done(mnist_600, tmp_path, caplog):
    """One meta-iteration without curriculum or imitation, validated by two runs (mean and sum both in the history);
    another seed or setting is refused; no seed given is the run's; the same run again trains and writes nothing."""
    small = dict(if_cl=False, if_mt=False, fix_num_steps=6, fix_num_steps_eval=6, evaluation_epochs=2,
                 num_meta_iterations=1)
    meta_training.ScaleTraining(tiny_config(tmp_path, **small), mnist_600).run()
    logdir = tmp_path / scale_config.LOGDIR_NAME
    (validation,) = [h for h in json.loads((logdir / "history.json").read_text()) if h["kind"] == "validation"]
    assert validation["validation_loss_mean"] * 2 == validation["validation_loss_sum"] > 0  # halving is exact
    with pytest.raises(errors.UsageError, match="holds another run: --mini_batch_size=200 there, 300 now; --seed=3 "
                                                "there, 4 now; resume it with its settings"):
        meta_training.ScaleTraining(tiny_config(tmp_path, **small, mini_batch_size=300, seed=4), mnist_600)
    files = {p: os.stat(p).st_mtime_ns for p in glob.glob(str(tmp_path / "**"), recursive=True)}
    caplog.set_level(logging.INFO)
    again = meta_training.ScaleTraining(tiny_config(tmp_path, **{**small, "seed": None, "save_period": 5}), mnist_600)
    assert again.resumed and again.seed == 3
    again.run()
    assert {p: os.stat(p).st_mtime_ns for p in glob.glob(str(tmp_path / "**"), recursive=True)} == files
    assert ("this run has already ended (it reached epoch 1 of --num_meta_iterations=1; a larger "
            f"--num_meta_iterations continues it); the best model is {logdir / 'model.ckpt-0'}") in caplog.text


# -- §4.2 the shared imitation code with Scale's options ---------------------------------------------------------

from l2o_tf import imitation, optimizers  # noqa: E402


def np_adam_steps(gradients, lr=0.01, b1=0.9, b2=0.999, eps=1e-8):
    m = v = 0.0
    for t, g in enumerate(gradients, 1):
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        yield -lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps)


def test_teacher_from_a_given_start_on_given_minibatches(small_mnist):
    """k = 2: recorded gradient i is at the teacher's iterate after 2i steps on minibatch 2i; step i spans 2 steps."""
    rng = np.random.default_rng(13)
    params = [0.1 * p for p in plans.optimizee_init(rng, small_mnist.param_shapes)]
    batches = plans.batch_indices(rng, 300, 6, 16)
    teacher = imitation.Teacher(small_mnist, optimizers.Adam(0.01), tf.random.Generator.from_seed(0), k=2)
    gradients, steps = (a.numpy() for a in teacher.trajectory(3, params=params, batches=batches))
    x = small_mnist.images.numpy().reshape(300, -1).astype(np.float64)
    y = small_mnist.labels.numpy()
    flat = np.concatenate([p.ravel() for p in params]).astype(np.float64)
    shapes = small_mnist.param_shapes
    split = np.cumsum([int(np.prod(s)) for s in shapes])[:-1]

    def gradient(v, batch):
        tensors = [piece.reshape(s) for piece, s in zip(np.split(v, split), shapes)]
        return np.concatenate([g.ravel() for g in np_mlp_loss_and_gradient(tensors, x[batch], y[batch])[1]])

    iterates, recorded = [flat], []
    m, v = np.zeros_like(flat), np.zeros_like(flat)
    for t, batch in enumerate(batches, 1):
        g = gradient(iterates[-1], batch)
        recorded.append(g)
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        iterates.append(iterates[-1] - 0.01 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(v) + 1e-8))
    np.testing.assert_allclose(gradients, np.stack(recorded[::2]), rtol=1e-3, atol=1e-6)
    # Adam divides by sqrt(v): where a gradient is ~0 its float32 rounding shows; 2e-5 is 0.2% of a step of lr
    np.testing.assert_allclose(steps, np.stack([iterates[i + 2] - iterates[i] for i in (0, 2, 4)]), rtol=1e-3,
                               atol=2e-5)
    with pytest.raises(ValueError):
        teacher.trajectory(4, params=params, batches=batches)  # 4 steps of k = 2 need 8 minibatches


def test_imitation_trainer_with_scales_options():
    """Unrolls of 2 then 3 steps from a given state, each step's loss weighted 1/T, the shared optimizer applied by
    the given rule; the state goes on across unrolls and is kept."""
    rule = MomentumRule()
    rule.build()
    rng = np.random.default_rng(14)
    shapes = [(3, 2), (4,)]
    gradients = rng.normal(size=[5, 10]).astype(np.float32)
    steps = rng.normal(size=[5, 10]).astype(np.float32) * 0.1
    applied_to = []

    def record(optimizer, grads, variables, loss):
        applied_to.append(optimizer)
        return tf.constant(True)

    shared = meta_optimizer.TF1RMSProp()
    trainer = imitation.ImitationTrainer(rule, param_shapes=shapes, optimizer=shared, apply=record,
                                         average_over_unroll=True)
    state = [tf.fill(s, 0.2) for s in shapes]
    loss, applied = trainer.train_epoch(tf.constant(gradients), tf.constant(steps), state=state,
                                        unroll_lengths=[2, 3])
    m, losses = np.full(10, 0.2), []
    for t in range(5):
        m = 0.5 * m + gradients[t]
        losses.append(0.5 * np.sum((steps[t] + np.exp(-2.0) * m) ** 2) / 10)
    assert applied == 2 and applied_to == [shared, shared]
    assert loss == pytest.approx(np.mean(losses[2:]), rel=1e-5)
    np.testing.assert_allclose(np.concatenate([s.numpy().ravel() for s in trainer.state]), m, rtol=1e-5)
    with pytest.raises(ValueError):
        trainer.train_epoch(tf.constant(gradients), tf.constant(steps), unroll_lengths=[3, 3])


# -- the command line: bad input is one line, before TensorFlow loads ----------------------------------------------

import subprocess  # noqa: E402
import sys  # noqa: E402

CHECK_WITHOUT_TENSORFLOW = """
import json, sys
from absl import flags
from l2o_scale import metarun
for args in json.loads(sys.argv[1]):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["metarun"] + args)
    try:
        print(metarun.scale_config())
    except Exception as e:
        print(f"error: {e}")
print("tensorflow loaded" if "tensorflow" in sys.modules else "no tensorflow")
"""

BAD_FLAGS = [
    ([], "no training problem selected"),
    (["--include_mnist_conv_problems"], "ConvNets are not implemented"),
    (["--include_mnist_mlp_problems", "--reg_optimizer", "--regularize_time=posterior"], "--regularize_time=none"),
    (["--include_mnist_mlp_problems", "--reg_optimizee"], "--reg_optimizee"),
    (["--include_mnist_mlp_problems", "--use_attention"], "default architecture only"),
    (["--include_mnist_mlp_problems", "--num_problems=2"], "--num_problems=2"),
    (["--include_mnist_mlp_problems", "--fix_num_steps=10"], "shorter than one unroll"),
    (["--include_mnist_mlp_problems", "--mt_ratio=1.5"], "--mt_ratio"),
    (["--include_mnist_mlp_problems", "--if_cl", "--num_steps_schedule=100 50"], "--num_steps_schedule"),
]
README_FLAGS = ["--train_dir=hess_cl_mt", "--regularize_time=none", "--alpha=1e-4", "--reg_optimizer=True",
                "--reg_option=hessian-esd", "--include_mnist_mlp_problems", "--num_problems=1",
                "--num_meta_iterations=100", "--fix_unroll=True", "--fix_unroll_length=20", "--evaluation_period=1",
                "--evaluation_epochs=5", "--use_second_derivatives=False", "--if_cl=True", "--if_mt=True",
                "--mt_ratio=0.1", "--mt_k=1"]


def test_flags_are_checked_before_tensorflow_loads():
    """Bad input is one `error:` line; the README's flags (its regulariser off by --regularize_time=none) are a valid
    configuration with the original's defaults; TensorFlow is never imported for either."""
    cases = [args for args, _ in BAD_FLAGS] + [README_FLAGS]
    result = subprocess.run([sys.executable, "-c", CHECK_WITHOUT_TENSORFLOW, json.dumps(cases)],
                            capture_output=True, text=True, timeout=300)
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "no tensorflow" and len(lines) == len(cases) + 1, result.stdout + result.stderr
    for line, (_, message) in zip(lines, BAD_FLAGS):
        assert line.startswith("error: ") and message in line, line
    readme = lines[len(BAD_FLAGS)]
    assert not readme.startswith("error")
    for field in ("if_cl=True", "if_mt=True", "mt_ratio=0.1", "meta_learning_rate=1e-06", "evaluation_epochs=5",
                  "use_second_derivatives=False", "num_meta_iterations=100", "reset_rnn_params=True",
                  "num_steps_schedule=(100, 200, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500, 5000)"):
        assert field in readme
