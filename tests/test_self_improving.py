"""The self-improving mixture (the paper's §4.2): choice frequencies, the learned-only meta-gradient, the decay."""
import numpy as np
import pytest
import tensorflow as tf

from l2o_tf import meta, networks, optimizers, self_improving


def generator(seed):
    return tf.random.Generator.from_seed(seed)


# -- self-improving mixture -------------------------------------------------------------------------------------

def three_auxiliaries():
    return [optimizers.SGD(0.1), optimizers.Adam(0.01), optimizers.Adagrad(0.01)]


def test_mixture_starts_uniform():
    """The paper's start: p_0 = ... = p_k = 1/(k+1)."""
    mixture = self_improving.MixtureRule(optimizers.SGD(1.0), three_auxiliaries(), generator(0))
    np.testing.assert_allclose(mixture.probabilities.numpy(), [0.25] * 4)


def test_mixture_with_zero_probability_is_the_learned_optimizer():
    """p = 0: every step is the cell's own, bit for bit; the auxiliaries still see every gradient."""
    cell = networks.CoordinateWiseDeepLSTM(seed=6)
    mixture = self_improving.MixtureRule(cell, three_auxiliaries(), generator(1))
    mixture.set_auxiliary_probability(0.0)
    np.testing.assert_array_equal(mixture.probabilities.numpy(), [1.0, 0.0, 0.0, 0.0])
    gradients = (np.random.default_rng(3).standard_normal([5, 6]) * 1e-2).astype(np.float32)
    state, cell_state = mixture.initial_state(6), cell.initial_state(6)
    for g in gradients:
        delta, state = mixture.step(tf.constant(g), state)
        expected, cell_state = cell.step(tf.constant(g), cell_state)
        np.testing.assert_array_equal(delta.numpy(), expected.numpy())
    for mine, theirs in zip(cell_state, state[0]):
        np.testing.assert_array_equal(theirs.numpy(), mine.numpy())
    _, (_, _, adam_steps), (adagrad_acc,) = state[1]
    assert float(adam_steps) == 5.0
    np.testing.assert_allclose(adagrad_acc.numpy(), 0.1 + np.sum(gradients.astype(np.float64) ** 2, 0), rtol=1e-6)


def test_mixture_with_only_the_auxiliary():
    """One auxiliary at p = 1: the learned optimizer has probability 0 and every step is the auxiliary's."""
    cell = networks.CoordinateWiseDeepLSTM(seed=6)
    mixture = self_improving.MixtureRule(cell, [optimizers.SGD(0.1)], generator(2))
    mixture.set_auxiliary_probability(1.0)
    state = mixture.initial_state(6)
    for g in np.random.default_rng(4).standard_normal([5, 6]).astype(np.float32):
        delta, state = mixture.step(tf.constant(g), state)
        np.testing.assert_allclose(delta.numpy(), -0.1 * g, rtol=1e-6)


def test_mixture_choice_frequencies():
    """Each step draws one optimizer for all coordinates; empirical frequencies follow the probabilities.

    Rules are identified by their step on a gradient of ones: learned SGD(1), auxiliaries SGD(2), SGD(3), SGD(4).
    The probabilities are a variable, so a compiled loop follows later changes."""
    mixture = self_improving.MixtureRule(optimizers.SGD(1.0), [optimizers.SGD(2.0), optimizers.SGD(3.0),
                                                          optimizers.SGD(4.0)], generator(5))
    steps = 4000

    @tf.function
    def run():
        state = mixture.initial_state(3)
        out = tf.TensorArray(tf.float32, size=steps)
        for i in tf.range(steps):
            delta, state = mixture.step(tf.ones([3]), state)
            out = out.write(i, delta)
        return out.stack()

    for p, expected in [(0.25, [0.25, 0.25, 0.25, 0.25]), (0.1, [0.7, 0.1, 0.1, 0.1])]:
        mixture.set_auxiliary_probability(p)
        deltas = run().numpy()
        assert np.all(deltas == deltas[:, :1])  # one draw per step, not per coordinate
        chosen = np.rint(-deltas[:, 0]).astype(int) - 1
        assert set(np.unique(chosen)) == {0, 1, 2, 3}
        frequencies = np.bincount(chosen, minlength=4) / steps
        np.testing.assert_allclose(frequencies, expected, atol=0.03)  # binomial sd <= 0.008


def test_mixture_meta_gradient_flows_through_the_learned_steps_only(quadratic):
    """In a Trainer: p = 0 gives the plain cell's meta-gradient; only an auxiliary's steps give a zero one."""
    cell = networks.for_problem("dm", "quadratic", seed=10)
    plain = meta.Trainer(quadratic, cell, generator(3), unroll_length=3)
    mixture = self_improving.MixtureRule(cell, three_auxiliaries(), generator(4))
    mixture.set_auxiliary_probability(0.0)
    mixed = meta.Trainer(quadratic, cell, generator(3), unroll_length=3, rule=mixture)
    trajectory = mixed.new_trajectory()
    loss, gradients = mixed.meta_gradient(trajectory)
    plain_loss, plain_gradients = plain.meta_gradient(trajectory._replace(state=trajectory.state[0]))
    np.testing.assert_allclose(float(loss), float(plain_loss), rtol=1e-6)
    for g, e in zip(gradients, plain_gradients):
        assert np.max(np.abs(e)) > 0
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-5, atol=1e-6 * np.max(np.abs(e)))

    only_sgd = self_improving.MixtureRule(cell, [optimizers.SGD(0.1)], generator(4))
    only_sgd.set_auxiliary_probability(1.0)
    auxiliary = meta.Trainer(quadratic, cell, generator(3), unroll_length=3, rule=only_sgd)
    _, gradients = auxiliary.meta_gradient(auxiliary.new_trajectory())
    for g, var in zip(gradients, cell.trainable_variables):
        assert g is None or np.all(np.asarray(g) == 0), var.name


def test_auxiliary_probability_schedule():
    """1/(k+1) at epoch 0, linear decay, 0 from decay_epochs on (the paper: 0.33 -> 0 over 100 epochs)."""
    assert self_improving.auxiliary_probability(0, 3, 100) == pytest.approx(0.25)
    assert self_improving.auxiliary_probability(50, 3, 100) == pytest.approx(0.125)
    assert self_improving.auxiliary_probability(75, 1, 100) == pytest.approx(0.125)
    assert self_improving.auxiliary_probability(100, 3, 100) == 0.0
    assert self_improving.auxiliary_probability(250, 3, 100) == 0.0
    assert self_improving.auxiliary_probability(0, 2, 100) == pytest.approx(1 / 3)


@pytest.mark.parametrize("p", [-0.01, 0.34, 0.5, 1.0])
def test_invalid_auxiliary_probability(p):
    """Three auxiliaries: p must lie in [0, 1/3]; a rejected value leaves the probabilities as they were."""
    mixture = self_improving.MixtureRule(optimizers.SGD(1.0), three_auxiliaries(), generator(0))
    mixture.set_auxiliary_probability(0.2)
    with pytest.raises(ValueError):
        mixture.set_auxiliary_probability(p)
    np.testing.assert_allclose(mixture.probabilities.numpy(), [0.4, 0.2, 0.2, 0.2], rtol=1e-6)


def test_boundary_auxiliary_probability():
    """p = 1/k is allowed: the learned optimizer gets probability 0."""
    mixture = self_improving.MixtureRule(optimizers.SGD(1.0), three_auxiliaries(), generator(0))
    mixture.set_auxiliary_probability(1 / 3)
    np.testing.assert_allclose(mixture.probabilities.numpy(), [0.0, 1 / 3, 1 / 3, 1 / 3], atol=1e-7)
