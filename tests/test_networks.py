"""The learned-optimizer cells against an independent numpy reading of SPEC_DM §1, and their files."""
import os
import pickle
import re

import numpy as np
import pytest
import keras
import tensorflow as tf

from l2o_tf import models
from l2o_tf import networks


def original_file(model):
    """The original release's weights file of `model`, as the package ships it (byte for byte: test_keras_optimizer
    checks each against the original's digest)."""
    return models.shipped_path(model)


# -- independent numpy reference (float64), written from the spec's formulas ------------------------------------

def np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_lstm(x, h, c, w, b):
    gates = np.concatenate([x, h], axis=1) @ w + b
    i, j, f, o = np.split(gates, 4, axis=1)
    c = np_sigmoid(f + 1.0) * c + np_sigmoid(i) * np.tanh(j)
    return np.tanh(c) * np_sigmoid(o), c


class NumpyDeepLSTM:
    def __init__(self, weights, rnnprop, beta1=0.95, beta2=0.95, dtype=np.float64):
        self.w = {m: {n: a.astype(dtype) for n, a in v.items()} for m, v in weights.items()}
        self.rnnprop, self.beta1, self.beta2, self.dtype = rnnprop, beta1, beta2, dtype

    def run(self, gradients):
        n = gradients.shape[1]
        h1, c1, h2, c2 = (np.zeros([n, 20], self.dtype) for _ in range(4))
        m, v = np.zeros([n, 1], self.dtype), np.zeros([n, 1], self.dtype)
        deltas = []
        for step, g in enumerate(gradients.astype(self.dtype), start=1):
            g = g[:, None]
            if self.rnnprop:
                m = self.beta1 * m + (1 - self.beta1) * g
                v = self.beta2 * v + (1 - self.beta2) * g * g
                m_hat, v_hat = m / (1 - self.beta1 ** step), v / (1 - self.beta2 ** step)
                features = np.concatenate([m_hat / (np.sqrt(v_hat) + 1e-8), g / (np.sqrt(v_hat) + 1e-8)], axis=1)
                p = self.w["input_projection"]
                z = features @ p["w"] + p["b"]
                x = np.where(z > 0, z, np.expm1(np.minimum(z, 0)))
            else:
                eps = np.finfo(np.float32).eps
                x = np.concatenate([np.maximum(np.log(np.abs(g) + eps) / 5.0, -1.0),
                                    np.clip(g * np.exp(5.0), -1.0, 1.0)], axis=1)
            h1, c1 = np_lstm(x, h1, c1, self.w["lstm_1"]["w_gates"], self.w["lstm_1"]["b_gates"])
            h2, c2 = np_lstm(h1, h2, c2, self.w["lstm_2"]["w_gates"], self.w["lstm_2"]["b_gates"])
            out = h2 @ self.w["linear"]["w"] + self.w["linear"]["b"]
            deltas.append(0.01 * (np.tanh(out) if self.rnnprop else out)[:, 0])
        return np.stack(deltas)


def random_gradients(steps, n, seed):
    """Gradients whose magnitudes span 1e-8..1e2 with random signs, a smooth trend per coordinate plus noise."""
    rng = np.random.default_rng(seed)
    log_magnitude = rng.uniform(-8, 2, size=n) + 0.3 * rng.standard_normal([steps, n])
    return (np.sign(rng.standard_normal([steps, n])) * 10.0 ** np.clip(log_magnitude, -8, 2)).astype(np.float32)


def run_cell(cell, gradients):
    step = tf.function(cell.step)
    state = cell.initial_state(gradients.shape[1])
    deltas = []
    for g in gradients:
        delta, state = step(tf.constant(g), state)
        deltas.append(delta.numpy())
    return np.stack(deltas)


@pytest.mark.parametrize("model", ["dm_cl_il", "rnnprop_cl_il", "rnnprop"])
def test_cell_matches_numpy_reference_with_original_weights(model):
    cell = networks.load(original_file(model))
    gradients = random_gradients(60, 400, seed=0)
    reference = NumpyDeepLSTM(cell.get_original_weights(), rnnprop=model.startswith("rnnprop")).run(gradients)
    ours = run_cell(cell, gradients)
    # Relative error of each step's update vector. (Element-wise it is meaningless where h2.w + b cancels to ~0:
    # float32 rounding of that sum alone is 1e-8 absolute.)
    relative = np.linalg.norm(ours - reference, axis=1) / np.linalg.norm(reference, axis=1)
    assert relative.max() < 1e-5
    assert np.abs(ours - reference).max() < 1e-5 * np.abs(reference).max()
    assert np.abs(reference).max() > 1e-3  # the check is not vacuous: the updates are not all ~0


def test_vanilla_dm_matches_reference_step_by_step():
    """`dm`'s weights are large (|w| up to 9.75) and amplify float32 rounding, so only the norm-wise error of each
    step's update is held to 1e-5 (element-wise, near-zero outputs lose digits to cancellation)."""
    cell = networks.load(original_file("dm"))
    gradients = random_gradients(60, 400, seed=0)
    reference = NumpyDeepLSTM(cell.get_original_weights(), rnnprop=False).run(gradients)
    relative = np.linalg.norm(run_cell(cell, gradients) - reference, axis=1) / np.linalg.norm(reference, axis=1)
    assert relative.max() < 1e-5


def test_fresh_cells_match_reference_and_have_the_original_sizes():
    for cell, rnnprop, size in [(networks.CoordinateWiseDeepLSTM(seed=1), False, 5141),
                                (networks.RNNprop(seed=1), True, 6641)]:
        cell.build()
        assert sum(int(np.prod(v.shape)) for v in cell.trainable_variables) == size
        gradients = random_gradients(10, 50, seed=1)
        reference = NumpyDeepLSTM(cell.get_original_weights(), rnnprop).run(gradients)
        np.testing.assert_allclose(run_cell(cell, gradients), reference, rtol=1e-4, atol=1e-8)


def test_a_cell_steps_its_lstms_with_its_lstm_step():
    """`lstm_step` is the one place a cell's LSTM step comes from (bench/bench_lstm_backward.py swaps variants in):
    a cell given a recording copy of it calls it for each of its two LSTMs and gives the same updates."""
    plain, swapped = networks.CoordinateWiseDeepLSTM(seed=3), networks.CoordinateWiseDeepLSTM(seed=3)
    calls = []

    def recording_step(inputs, h, c, w_gates, b_gates):
        calls.append(tuple(w_gates.shape))
        return networks.sonnet_lstm(inputs, h, c, w_gates, b_gates)

    swapped.lstm_step = recording_step
    states = [cell.initial_state(30) for cell in (plain, swapped)]
    for g in random_gradients(4, 30, seed=2):  # eagerly, so that every step calls it
        (expected, states[0]), (delta, states[1]) = plain.step(g, states[0]), swapped.step(g, states[1])
        np.testing.assert_array_equal(delta.numpy(), expected.numpy())
    assert calls == [(22, 80), (40, 80)] * 4

def test_initialisers_are_the_sonnet_defaults():
    cells = [networks.CoordinateWiseDeepLSTM(seed=10 * i) for i in range(80)]  # pooled: 1600 linear weights
    for cell in cells:
        cell.build()
    weights = [cell.get_original_weights() for cell in cells]
    for module, variable, fan_in in [("lstm_1", "w_gates", 22), ("lstm_1", "b_gates", 22),
                                     ("lstm_2", "w_gates", 40), ("lstm_2", "b_gates", 40), ("linear", "w", 20)]:
        values = np.concatenate([w[module][variable].ravel() for w in weights])  # the Sonnet gate bias is random too
        sigma = 1 / np.sqrt(fan_in)
        assert np.abs(values).max() <= 2 * sigma + 1e-6  # truncated at 2 sigma
        # a normal truncated at 2 sigma has std 0.8796 sigma; within 5 standard errors (at most 9% here)
        assert abs(values.std() / (0.8796 * sigma) - 1) < 5 / np.sqrt(2 * values.size), (module, variable)
        assert abs(values.mean()) < 5 * sigma / np.sqrt(values.size), (module, variable)
    assert all(np.all(w["linear"]["b"] == 0) for w in weights)


def test_log_and_sign_matches_the_spec():
    g = np.array([[0.0], [1e-9], [-0.01], [200.0], [-1e3]], np.float32)
    features = networks.log_and_sign(tf.constant(g)).numpy()
    eps = np.finfo(np.float32).eps
    expected_log = np.maximum(np.log(np.abs(g[:, 0]) + eps) / 5, -1)
    np.testing.assert_allclose(features[:, 0], expected_log, rtol=1e-6)
    assert features[3, 0] > 1  # no upper clamp on the log feature
    np.testing.assert_allclose(features[:, 1], np.clip(g[:, 0] * np.exp(5), -1, 1), rtol=1e-6)


@pytest.mark.parametrize("cell_class", [networks.CoordinateWiseDeepLSTM, networks.RNNprop])
def test_save_load_round_trip_is_bit_exact(tmp_path, cell_class):
    cell = cell_class(seed=3, scale=0.02)
    cell.build()
    path = networks.save(cell, str(tmp_path), index=12)
    assert os.path.basename(path) == f"{cell.key}.l2l-12"
    loaded = networks.load(path)
    assert type(loaded) is cell_class and loaded.scale == 0.02
    for module, variables in cell.get_original_weights().items():
        for name, value in variables.items():
            assert np.array_equal(loaded.get_original_weights()[module][name], value)
    gradients = random_gradients(5, 30, seed=2)
    assert np.array_equal(run_cell(cell, gradients), run_cell(loaded, gradients))
    # The file alone (no sidecar) is the original layout: plain pickle readers get module -> variable -> array.
    os.remove(path + ".json")
    with open(path, "rb") as f:
        raw = pickle.load(f)
    assert set(raw) == set(cell.get_original_weights())
    assert type(networks.load(path)) is cell_class


def test_layers_are_named_after_their_networks_and_numbered_like_keras_layers():
    first, second = networks.RNNprop(), networks.RNNprop()
    assert re.fullmatch(r"rnnprop(_\d+)?", first.name) and second.name != first.name
    assert second.name.startswith("rnnprop_") and networks.RNNprop(name="mine").name == "mine"
    assert networks.RNNprop.from_config(second.get_config()).name == second.name
    assert networks.CoordinateWiseDeepLSTM().name.startswith("coordinate_wise_deep_lstm")


def test_original_files_load_with_the_spec_statistics():
    expected = {"dm": (0.022, 1.005, -0.0915), "dm_cl_il": (0.004, 0.385, -0.0063), "rnnprop": (0.004, 0.144, -0.0067)}
    for model, (mean, std, bias) in expected.items():
        weights = networks.load(original_file(model)).get_original_weights()
        assert abs(weights["lstm_1"]["w_gates"].mean() - mean) < 1e-3
        assert abs(weights["lstm_1"]["w_gates"].std() - std) < 1e-3
        assert abs(weights["linear"]["b"][0] - bias) < 1e-4


def test_unsafe_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "cw.l2l-0"
    path.write_bytes(pickle.dumps({"lstm_1": {"w_gates": Exploit()}}))
    with pytest.raises(networks.WeightsFileError, match="not allowed"):
        networks.load(str(path))
    assert not marker.exists()


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(networks.WeightsFileError, match="no such weights file"):
        networks.load(str(tmp_path / "missing"))
    with pytest.raises(networks.WeightsFileError, match="is a directory"):
        networks.load(str(tmp_path))
    truncated = tmp_path / "cw.l2l-1"
    cell = networks.CoordinateWiseDeepLSTM(seed=0)
    cell.build()
    good = networks.save(cell, str(tmp_path), index=2)
    truncated.write_bytes(open(good, "rb").read()[:500])
    with pytest.raises(networks.WeightsFileError, match="corrupt|truncated"):
        networks.load(str(truncated))
    with open(good + ".json", "w") as f:
        f.write('{"class_name": "Lion", "config": {}}')
    with pytest.raises(networks.WeightsFileError, match="not a valid l2o-tf config sidecar"):
        networks.load(good)
    weights = cell.get_original_weights()
    weights["lstm_2"]["w_gates"] = weights["lstm_2"]["w_gates"][:30]
    wrong = tmp_path / "cw.l2l-3"
    wrong.write_bytes(pickle.dumps(weights, protocol=3))
    with pytest.raises(networks.WeightsFileError, match=r"lstm_2/w_gates\[40, 80\]"):
        networks.load(str(wrong))


@pytest.mark.parametrize("cell_class", [networks.CoordinateWiseDeepLSTM, networks.RNNprop])
def test_cell_runs_inside_keras_rnn_exactly_as_step(cell_class):
    """The batch-major Keras RNN-cell API and the feature-major `step` are one computation."""
    cell = cell_class(seed=1)
    rnn = keras.layers.RNN(cell, return_sequences=True)
    gradients = random_gradients(5, 7, seed=3)  # [steps, coordinates]
    sequence = rnn(gradients.T[:, :, None]).numpy()[:, :, 0]  # Keras: [coordinates, steps, features]
    np.testing.assert_allclose(sequence, run_cell(cell, gradients).T, rtol=1e-6, atol=1e-10)
    restored = cell_class.from_config(cell.get_config())
    assert restored.get_config() == cell.get_config()
