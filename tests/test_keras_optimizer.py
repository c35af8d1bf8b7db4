"""l2o_tf.load, LearnedOptimizer in model.fit, and GuardedModel: against the update rules run directly."""
import hashlib
import importlib.resources
import os
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

import l2o_scale
import l2o_tf
from l2o_scale import checkpoint
from l2o_tf import datasets
from l2o_tf import keras_step
from l2o_tf import models
from l2o_tf import networks
from l2o_tf import optimizers
from l2o_tf import rules

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
BATCH = 128


@pytest.fixture(scope="module")
def data():
    sample = datasets.embedded_sample("train")
    return sample.images.reshape(-1, 784)[:6 * BATCH], sample.labels[:6 * BATCH]


def mlp(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(20, activation="sigmoid"),
                             keras.layers.Dense(10)])


def weights(model):
    return [v.numpy().copy() for v in model.trainable_variables]


def batches(data, steps):
    x, y = data
    return [(x[i * BATCH:(i + 1) * BATCH], y[i * BATCH:(i + 1) * BATCH]) for i in range(steps)]


def direct_weights(rule, data, steps):
    """The same model trained by the rule through keras_step.apply_update, step by step: weights after each."""
    model = mlp()
    variables = model.trainable_variables
    state = rule.initial_state(variables)
    after = []
    for x, y in batches(data, steps):
        with tf.GradientTape() as tape:
            loss = LOSS(y, model(x))
        state = keras_step.apply_update(rule, tape.gradient(loss, variables), variables, state)
        after.append(weights(model))
    return after


# -- l2o_tf.load ------------------------------------------------------------------------------------------------

# SHA-256 of the authors' released files, computed from those files (not from the package's copies), so the check
# that the package ships them unchanged needs nothing outside the package. scale_smoke/ is their L2O-Scale
# hess_cl_mt/HierarchicalRNN_GRUCell_20_2/ checkpoint.
ORIGINAL_SHA256 = {
    "dm/cw.l2l-0": "d0b0edd3874fcd574216a4f3f28788dcfbd9139e0cb260db41f65b6569061cdb",
    "dm_aug/cw.l2l-0": "34f886ae439576c80b4ebc62574f7dedc2eee4648a77fd1956b530f360944ecc",
    "dm_cl/cw.l2l-0": "bfc780a8cff14f816d5f17bd803215870f20fa68c5561a6ab68bc66dabde66b3",
    "dm_cl_il/cw.l2l-0": "1303a2dc458138fbbf05484c04ccbf60e2256c1518bb1fc4544d24c66b664421",
    "dm_il/cw.l2l-0": "35ae64c5539585b6a19ec77833d9396323b7c3796e6878edd00d448266882485",
    "rnnprop/rp.l2l-0": "390f3ae55e413fd63336554047b57eb31e8dd055c1cf7bd089acff1b1424bc12",
    "rnnprop_cl_il/rp.l2l-0": "2e644b59409d10ba7a432bcc6e9ea22d84c0780f6b965386ae72f1472655d0cb",
    "scale_smoke/checkpoint": "8dcedc243b68897ba20c93cfe17e914faf0fe3696077bb577ebc9fa3e69dd563",
    "scale_smoke/model.ckpt-0.data-00000-of-00001":
        "1e38a99b041a07418c3eac76d04acbaa340596579ddbe49680b7c25f9edfb948",
    "scale_smoke/model.ckpt-0.index": "85de7c9dc9eb02972caa44740f661b502482f910b735a7e2f9a3e6277bc80a59",
}


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def test_the_package_ships_exactly_the_original_files():
    pretrained = importlib.resources.files("l2o_tf").joinpath("pretrained")
    shipped = {f"{model.name}/{file.name}": sha256(file.read_bytes())
               for model in pretrained.iterdir() if model.is_dir() for file in model.iterdir()}
    assert shipped == ORIGINAL_SHA256


@pytest.mark.parametrize("name", models.SHIPPED)
def test_every_shipped_model_loads_and_is_the_original_file(name):
    rule = l2o_tf.load(name)
    assert isinstance(rule, networks.RNNprop if name.startswith("rnnprop") else networks.CoordinateWiseDeepLSTM)
    key = "rp" if name.startswith("rnnprop") else "cw"
    with open(models.shipped_path(name), "rb") as f:
        assert sha256(f.read()) == ORIGINAL_SHA256[f"{name}/{key}.l2l-0"]


def test_scale_smoke_loads_the_original_checkpoint_which_is_untrained():
    rule = l2o_tf.load("scale_smoke")
    assert type(rule).__name__ == "HierarchicalRNN"
    reader = tf.train.load_checkpoint(os.path.join(models.shipped_path("scale_smoke"), "model.ckpt-0"))
    for name in ("LOL/update_weights", "LOL/PerTensor/GradsToDelta/Matrix", "LOL/Level0_RNN/init_vector"):
        np.testing.assert_array_equal(rule.original_variables()[name].numpy(), reader.get_tensor(name))
    # what its README says: 6 meta-steps that left the meta-parameters at, or within 3e-9 of, their initial values
    assert reader.get_tensor("global_step") == 6
    assert reader.get_tensor("LOL/PerTensor/param_stepsize_offset") == np.float32(-1.0)
    assert reader.get_tensor("LOL/inp_decay_bias").tolist() == [np.float32(2.2)]
    assert 0 < np.abs(reader.get_tensor("LOL/learning_rate_weights")).max() < 3e-9


def test_an_unknown_shipped_name_lists_the_shipped_names():
    for find in (l2o_tf.load, models.shipped_path):
        with pytest.raises(models.ModelNotFoundError) as error:
            find("scale_smoke_v2")
        assert "'scale_smoke_v2'" in str(error.value)
        assert "dm, dm_aug, dm_cl, dm_il, dm_cl_il, rnnprop, rnnprop_cl_il, scale_smoke" in str(error.value)
        assert "\n" not in str(error.value)
    with pytest.raises(checkpoint.CheckpointError, match="no such checkpoint.*shipped checkpoints: scale_smoke"):
        l2o_scale.load("scale_smoke_v2")


def test_load_takes_a_file_or_a_directory_and_says_what_is_wrong(tmp_path):
    cell = l2o_tf.load("rnnprop", beta1=0.9)
    assert cell.beta1 == 0.9
    networks.save(cell, str(tmp_path / "run"))
    for where in (tmp_path / "run", tmp_path / "run" / "rp.l2l-0"):
        loaded = l2o_tf.load(where)
        assert loaded.beta1 == 0.9
        for a, b in zip(loaded.get_weights(), cell.get_weights()):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(models.ModelNotFoundError, match="neither a shipped model"):
        l2o_tf.load("dm_cl_il_v2")
    (tmp_path / "empty").mkdir()
    with pytest.raises(models.ModelNotFoundError, match="no cw.l2l-0"):
        l2o_tf.load(tmp_path / "empty")


def test_a_tensorflow_checkpoint_goes_to_l2o_scale_load(tmp_path, monkeypatch):
    (tmp_path / "scale").mkdir()
    (tmp_path / "scale" / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-0"\n')
    (tmp_path / "model.ckpt-0.index").write_bytes(b"")
    calls = []
    fake = types.ModuleType("l2o_scale")
    fake.load = lambda path, **overrides: calls.append((path, overrides)) or "scale rule"
    monkeypatch.setitem(sys.modules, "l2o_scale", fake)
    assert l2o_tf.load(tmp_path / "scale") == "scale rule"
    assert l2o_tf.load(str(tmp_path / "model.ckpt-0")) == "scale rule"
    assert l2o_tf.load(str(tmp_path / "model.ckpt-0.index")) == "scale rule"
    assert l2o_tf.load("scale_smoke", seed=3) == "scale rule"
    assert calls == [(str(tmp_path / "scale"), {}), (str(tmp_path / "model.ckpt-0"), {}),
                     (str(tmp_path / "model.ckpt-0"), {}), (models.shipped_path("scale_smoke"), {"seed": 3})]


# -- LearnedOptimizer ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["dm_cl_il", "rnnprop"])
def test_fit_equals_the_rule_run_directly_step_for_step(data, name):
    steps = 4
    model = mlp()
    model.compile(optimizer=l2o_tf.LearnedOptimizer(name), loss=LOSS)
    fitted = []
    for x, y in batches(data, steps):  # one fit call per batch: the state also survives fit being called again
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        fitted.append(weights(model))
    for got, want in zip(fitted, direct_weights(l2o_tf.load(name), data, steps)):
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert int(model.optimizer.iterations) == steps


def test_fit_lowers_the_loss(data):
    model = mlp()
    model.compile(optimizer=l2o_tf.LearnedOptimizer("dm_cl_il"), loss=LOSS)
    history = model.fit(*data, batch_size=BATCH, epochs=4, shuffle=False, verbose=0).history["loss"]
    assert history[-1] < 0.5 * history[0]


def test_save_and_restore_mid_training_continues_identically(data, tmp_path):
    x, y = data
    model = mlp()
    model.compile(optimizer=l2o_tf.LearnedOptimizer("rnnprop"), loss=LOSS)
    model.fit(x[:3 * BATCH], y[:3 * BATCH], batch_size=BATCH, shuffle=False, verbose=0)
    model.save(tmp_path / "mid.keras")
    restored = keras.models.load_model(tmp_path / "mid.keras")
    assert isinstance(restored.optimizer, l2o_tf.LearnedOptimizer)
    for a, b in zip(restored.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for m in (model, restored):
        m.fit(x[3 * BATCH:], y[3 * BATCH:], batch_size=BATCH, shuffle=False, verbose=0)
    for a, b in zip(weights(restored), weights(model)):
        np.testing.assert_array_equal(a, b)


def test_a_rule_object_and_bad_uses_are_clear_errors(data):
    model = mlp()
    model.compile(optimizer=l2o_tf.LearnedOptimizer(optimizers.Adagrad(0.1)), loss=LOSS)
    model.fit(*batches(data, 1)[0], batch_size=BATCH, verbose=0)
    np.testing.assert_allclose(model.optimizer.variables[-1].numpy(),  # Adagrad's accumulator: 0.1 + g^2
                               0.1 + np.square(np.concatenate([g.ravel() for g in _gradients(data)])), rtol=1e-4)
    with pytest.raises(models.ModelNotFoundError):
        l2o_tf.LearnedOptimizer("no_such_model")
    with pytest.raises(l2o_tf.keras_optimizer.KerasOptimizerError, match="clipnorm"):
        l2o_tf.LearnedOptimizer("dm", clipnorm=1.0)
    with pytest.raises(l2o_tf.keras_optimizer.KerasOptimizerError, match="LearnedOptimizer"):
        l2o_tf.GuardedModel(mlp()).compile(optimizer=keras.optimizers.Adam(), loss=LOSS)


def _gradients(data):
    model = mlp()
    x, y = batches(data, 1)[0]
    with tf.GradientTape() as tape:
        loss = LOSS(y, model(x))
    return [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


# -- GuardedModel -------------------------------------------------------------------------------------------------

class Ascent(rules.CoordinatewiseRule):
    """A 'learned' optimizer that climbs: delta = +lr g. Any sane guard must refuse every one of its steps."""

    def flat_initial_state(self, n):
        return ()

    def flat_step(self, gradient, state):
        return 0.5 * gradient, state


def guarded_fit(data, learned, steps, **guard):
    model = l2o_tf.GuardedModel(mlp(), **guard)
    model.compile(optimizer=l2o_tf.LearnedOptimizer(learned), loss=LOSS)
    x, y = data
    history = model.fit(x[:steps * BATCH], y[:steps * BATCH], batch_size=BATCH, shuffle=False, verbose=0).history
    return model, history


def test_lgl2o_refuses_a_climbing_optimizer_and_is_then_plain_sgd(data):
    steps = 3
    model, history = guarded_fit(data, Ascent(), steps, guard="lgl2o", guard_learning_rate=0.5)
    assert history["learned_step"] == [0.0]
    assert float(model.optimizer.rule.record(model.optimizer.state)) == 0.0
    for a, b in zip(weights(model), direct_weights(optimizers.SGD(0.5), data, steps)[-1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_lgl2o_keeps_a_learned_optimizer_that_beats_a_useless_guard(data):
    # a guard with a tiny learning rate barely moves: the learned step is lower on every batch and is always taken,
    # so the run equals the unguarded one
    steps = 3
    model, history = guarded_fit(data, "dm_cl_il", steps, guard="lgl2o", guard_learning_rate=1e-6)
    assert history["learned_step"] == [1.0]
    for a, b in zip(weights(model), direct_weights(l2o_tf.load("dm_cl_il"), data, steps)[-1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("learned", ["dm", "dm_cl_il"])
def test_gl2o_first_step_against_a_hand_computation(data, learned):
    # mu_0 = |g(x_0)|; the learned candidate x_0 + d is taken iff |g(x_0 + d)| < 0.99 mu_0 on the same batch
    model, history = guarded_fit(data, learned, 1, guard="gl2o", guard_learning_rate=0.5)
    x, y = batches(data, 1)[0]
    reference = mlp()
    variables = reference.trainable_variables

    def gradient_norm():
        with tf.GradientTape() as tape:
            loss = LOSS(y, reference(x))
        return float(tf.linalg.global_norm(tape.gradient(loss, variables)))

    mu = gradient_norm()
    rule = l2o_tf.load(learned)
    keras_step.apply_update(rule, _gradients(data), variables, rule.initial_state(variables))
    accept = gradient_norm() < 0.99 * mu
    assert history["learned_step"] == [float(accept)]
    want = weights(reference) if accept else direct_weights(optimizers.SGD(0.5), data, 1)[-1]
    for a, b in zip(weights(model), want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    mu_after = 0.1 * gradient_norm() + 0.9 * mu if accept else mu
    np.testing.assert_allclose(float(model.optimizer.state.mu[0]), mu_after, rtol=1e-5)


class HalveThenBlowUp(rules.UpdateRule):
    """delta = -0.5 g at its steps 0 and 1 (w -> 0.5 w below), +10 g from step 2 on (w -> 11 w); the state is its
    step counter, so that what the guard does to the learned state can be read."""

    def initial_state(self, params):
        return tf.constant(0.0)

    def step(self, gradients, state, loss=None):
        factor = tf.where(state < 2.0, -0.5, 10.0)
        return [factor * g for g in gradients], state + 1.0


@pytest.mark.parametrize("learned_state, counter", [("advance", 4.0), ("keep", 2.0), ("reset", 0.0)])
def test_guarded_fit_takes_the_better_candidate_with_gl2o_every_2_and_an_adam_guard(learned_state, counter):
    # f(w) = mean((x w)^2) on the batch x = I (two rows): 0.5 ||w||^2, gradient w. GL2O decides at steps 0 and 2:
    # at 0 the learned candidate 0.5 w_0 has residual 0.5 mu_0 (taken, and kept at step 1); at 2 it is 11 w_2,
    # residual 2.75 mu_0 (refused: the Adam guard's steps are taken at 2 and 3)
    model = l2o_tf.GuardedModel(
        keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False,
                                                                kernel_initializer=keras.initializers.Constant(
                                                                    [[1.0], [-2.0]]))]),
        guard="gl2o", guard_optimizer="adam", guard_learning_rate=0.1, guard_every=2, mu_update="max",
        learned_state=learned_state)
    model.compile(optimizer=l2o_tf.LearnedOptimizer(HalveThenBlowUp()), loss="mse")
    x, y = np.tile(np.eye(2, dtype=np.float32), (4, 1)), np.zeros((8, 1), np.float32)
    history = model.fit(x, y, batch_size=2, shuffle=False, verbose=0).history
    assert history["learned_step"] == [0.5]
    w, adam = np.array([1.0, -2.0], np.float32), optimizers.Adam(0.1)
    adam_state = adam.initial_state(2)
    for taken in ("learned", "learned", "guard", "guard"):  # the guard optimizer sees every gradient (= w)
        adam_delta, adam_state = adam.step(tf.constant(w), adam_state)
        w = w - 0.5 * w if taken == "learned" else w + adam_delta.numpy()
    np.testing.assert_allclose(weights(model)[0].ravel(), w, rtol=1e-6)
    state = model.optimizer.state
    np.testing.assert_allclose(float(state.mu[0]), np.sqrt(5.0), rtol=1e-6)  # the max of mu_0 and 0.5 mu_0
    assert float(state.learned) == counter


def test_guarded_model_saves_restores_and_continues_identically(data, tmp_path):
    x, y = data
    model = l2o_tf.GuardedModel(mlp(), guard="gl2o", guard_optimizer="adam", guard_learning_rate=0.01)
    model.compile(optimizer=l2o_tf.LearnedOptimizer("rnnprop"), loss=LOSS, metrics=["accuracy"])
    model.fit(x[:3 * BATCH], y[:3 * BATCH], batch_size=BATCH, shuffle=False, verbose=0)
    model.save(tmp_path / "guarded.keras")
    restored = keras.models.load_model(tmp_path / "guarded.keras")
    assert isinstance(restored, l2o_tf.GuardedModel) and restored.guard == "gl2o"
    histories = [m.fit(x[3 * BATCH:], y[3 * BATCH:], batch_size=BATCH, shuffle=False, verbose=0).history
                 for m in (model, restored)]
    assert histories[0] == histories[1]
    for a, b in zip(weights(restored), weights(model)):
        np.testing.assert_array_equal(a, b)
    assert set(model.evaluate(x, y, verbose=0, return_dict=True)) == {"loss", "accuracy"}


def test_l2o_scale_checkpoint_through_load_and_fit(data):
    # L2O-Scale's state spans tensors (per-tensor and global RNN states): apply() steps them all at once
    steps = 2
    rule = l2o_tf.load("scale_smoke", seed=3)
    assert type(rule).__name__ == "HierarchicalRNN"
    model = mlp()
    model.compile(optimizer=l2o_tf.LearnedOptimizer(rule), loss=LOSS)
    x, y = data
    model.fit(x[:steps * BATCH], y[:steps * BATCH], batch_size=BATCH, shuffle=False, verbose=0)
    want = direct_weights(l2o_tf.load("scale_smoke", seed=3), data, steps)[-1]  # same seed: same initial learning rates
    for a, b in zip(weights(model), want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
