"""Imitation learning (SPEC_DM §6) and the self-improving mixture (paper §4.2) against numpy and hand computations."""
import numpy as np
import pytest
import tensorflow as tf

from l2o_tf import imitation, meta, networks, optimizers, problems, rules

B = problems.BATCH_SIZE


@pytest.fixture(scope="module")
def quadratic():
    return problems.get("quadratic")


def generator(seed):
    return tf.random.Generator.from_seed(seed)


def np_quadratic_gradient(flat, w, y):
    residual = np.einsum("bij,bj->bi", w, flat.reshape(B, 10)) - y
    return (2.0 / B * np.einsum("bij,bi->bj", w, residual)).reshape(-1)


class NumpyAdam:
    """TF1 Adam (eps 1e-8 outside the bias-corrected sqrt), float64."""

    def __init__(self, n, lr=0.01, b1=0.9, b2=0.999, eps=1e-8):
        self.m, self.v, self.t = np.zeros(n), np.zeros(n), 0
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps

    def step(self, g):
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        lr_t = self.lr * np.sqrt(1 - self.b2 ** self.t) / (1 - self.b1 ** self.t)
        return -lr_t * self.m / (np.sqrt(self.v) + self.eps)


def same_start(problem, rule, seed, scale_bound=0.0):
    """x_0, W, y, scale of the trajectory a Teacher seeded with `seed` starts from (it draws them first)."""
    start = meta.new_trajectory(problem, rule, generator(seed), scale_bound)
    w, y = (np.asarray(c, np.float64) for c in start.constants)
    return (np.asarray(rules.flatten(start.params), np.float64), w, y,
            np.asarray(rules.flatten(start.scale), np.float64))


# -- Teacher ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale_bound", [0.0, 1.0])
def test_teacher_k1_records_adams_steps_and_its_gradients(quadratic, scale_bound):
    """k=1: step_i is Adam's update from the recorded gradients, and gradient_i is grad f at x_0 + sum of steps < i."""
    teacher = imitation.Teacher(quadratic, optimizers.Adam(0.01), generator(31), k=1)
    gradients, steps = (a.numpy() for a in teacher.trajectory(10, scale_bound=scale_bound))
    assert gradients.shape == steps.shape == (10, quadratic.num_params)
    adam = NumpyAdam(quadratic.num_params)
    expected = np.stack([adam.step(g) for g in gradients.astype(np.float64)])
    # steps are float32 differences of iterates |x| ~ 0.1 (rounding ~1e-8); Adam's steps here are ~1e-2
    np.testing.assert_allclose(steps, expected, rtol=3e-5, atol=3e-8)
    # the recorded gradients are at the teacher's iterates (w.r.t. the unscaled x: scale * grad f(scale x))
    x, w, y, scale = same_start(quadratic, optimizers.Adam(0.01), 31, scale_bound)
    for g, step in zip(gradients, steps):
        reference = scale * np_quadratic_gradient(scale * x, w, y)
        np.testing.assert_allclose(g, reference, rtol=1e-4, atol=1e-5 * np.max(np.abs(reference)))
        x = x + step
    assert np.max(np.abs(gradients[-1] - gradients[0])) > 1e-3  # the optimizee moved


def test_teacher_k2_records_two_step_displacements(quadratic):
    """k=2: step_i = x_{2i+2} - x_{2i} (two Adam steps), gradient_i = grad f(x_{2i}) (the first of the pair).

    Checked against the k=1 teacher (verified above) from the same seed over 2n steps, and the first pair in numpy."""
    n = 8
    gradients, steps = (a.numpy() for a in
                        imitation.Teacher(quadratic, optimizers.Adam(0.01), generator(32), k=2).trajectory(n))
    assert gradients.shape == steps.shape == (n, quadratic.num_params)
    k1_gradients, k1_steps = (a.numpy() for a in
                              imitation.Teacher(quadratic, optimizers.Adam(0.01), generator(32)).trajectory(2 * n))
    np.testing.assert_allclose(gradients, k1_gradients[0::2], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(steps, k1_steps[0::2] + k1_steps[1::2], rtol=1e-5, atol=3e-8)
    assert np.max(np.abs(steps - k1_steps[:n])) > 5e-3  # ~2x the k=1 step: not the k=1 record
    x, w, y, _ = same_start(quadratic, optimizers.Adam(0.01), 32)
    adam = NumpyAdam(quadratic.num_params)
    first = np_quadratic_gradient(x, w, y)
    pair = adam.step(first)
    pair = pair + adam.step(np_quadratic_gradient(x + pair, w, y))
    np.testing.assert_allclose(gradients[0], first, rtol=1e-5, atol=1e-6 * np.max(np.abs(first)))
    np.testing.assert_allclose(steps[0], pair, rtol=1e-4, atol=3e-8)


# -- imitation loss ---------------------------------------------------------------------------------------------

def constant_output_cell(value):
    """A DM cell with all weights zero but the linear bias: it outputs 0.01 * value for every coordinate."""
    cell = networks.CoordinateWiseDeepLSTM(seed=0)
    cell.build()
    weights = {m: {n: np.zeros_like(a) for n, a in v.items()} for m, v in cell.get_original_weights().items()}
    weights["linear"]["b"] = np.array([value], np.float32)
    cell.set_original_weights(weights)
    return cell


def test_imitation_loss_by_hand():
    """delta = 0.02 everywhere: loss = sum_t 0.5 * sum_i (step_ti - 0.02)^2 / n, summed (not averaged) over t."""
    trainer = imitation.ImitationTrainer(constant_output_cell(2.0), unroll_length=2)
    gradients = tf.constant([[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]])
    steps = tf.constant([[0.02, 0.12, -0.08], [0.0, 0.04, 0.02]])
    loss, _ = trainer.imitation_loss(gradients, steps, trainer.cell.initial_state(3))
    by_hand = 0.5 * (0.0 + 0.01 + 0.01) / 3 + 0.5 * (0.0004 + 0.0004 + 0.0) / 3
    np.testing.assert_allclose(float(loss), by_hand, rtol=1e-5)


def test_imitation_loss_runs_the_cell_with_its_state():
    """A random DM cell over 2 steps: the loss uses the deltas of cell.step with the state carried, and returns it."""
    cell = networks.CoordinateWiseDeepLSTM(seed=5)
    trainer = imitation.ImitationTrainer(cell, unroll_length=2)
    rng = np.random.default_rng(2)
    gradients = (rng.standard_normal([2, 4]) * 1e-2).astype(np.float32)
    steps = (rng.standard_normal([2, 4]) * 1e-2).astype(np.float32)
    loss, final_state = trainer.imitation_loss(tf.constant(gradients), tf.constant(steps), cell.initial_state(4))
    state, expected = cell.initial_state(4), 0.0
    deltas = []
    for g, s in zip(gradients, steps):
        delta, state = cell.step(tf.constant(g), state)
        delta = delta.numpy().astype(np.float64)
        deltas.append(delta)
        expected += 0.5 * np.sum((s.astype(np.float64) - delta) ** 2) / 4
    assert not np.allclose(deltas[0], deltas[1])  # the state matters (same cell, different outputs)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    for mine, theirs in zip(state, final_state):
        np.testing.assert_allclose(theirs.numpy(), mine.numpy(), rtol=1e-6, atol=1e-7)


def total_imitation_loss(trainer, gradients, steps):
    """The epoch's windows with the state carried, weights fixed: sum of the unroll losses."""
    state, total = trainer.cell.initial_state(int(gradients.shape[1])), 0.0
    length = trainer.unroll_length
    for start in range(0, int(gradients.shape[0]) - length + 1, length):
        loss, state = trainer.imitation_loss(gradients[start:start + length], steps[start:start + length], state)
        total += float(loss)
    return total


def test_train_epoch_lowers_the_imitation_loss_with_its_own_adam(quadratic):
    """Epochs on one Adam trajectory lower its imitation loss; the IL Adam steps once per unroll, the main one never."""
    gradients, steps = imitation.Teacher(quadratic, optimizers.Adam(0.01), generator(40)).trajectory(20)
    cell = networks.for_problem("dm", "quadratic", seed=1)
    main = meta.Trainer(quadratic, cell, generator(1))
    main_slots = [v.numpy().copy() for v in main.optimizer.variables]
    trainer = imitation.ImitationTrainer(cell, learning_rate=1e-3, unroll_length=10)
    assert trainer.optimizer is not main.optimizer and trainer.variables == main.variables
    before = total_imitation_loss(trainer, gradients, steps)
    losses, applied = zip(*[trainer.train_epoch(gradients, steps) for _ in range(8)])
    assert set(applied) == {int(gradients.shape[0]) // trainer.unroll_length}
    after = total_imitation_loss(trainer, gradients, steps)
    assert np.all(np.isfinite(losses))
    assert after < 0.3 * before  # ~0.006x in practice
    assert int(trainer.optimizer.iterations) == 8 * 2  # 20 steps / unroll 10 = 2 Adam steps per epoch
    assert int(main.optimizer.iterations) == 0
    for old, slot in zip(main_slots, main.optimizer.variables):
        np.testing.assert_array_equal(slot.numpy(), old)


def test_a_non_finite_imitation_update_is_skipped_and_counted(quadratic):
    """A NaN in the teacher's record must not reach the weights or the IL Adam; the epoch reports it."""
    gradients, steps = imitation.Teacher(quadratic, optimizers.Adam(0.01), generator(42)).trajectory(20)
    steps = tf.tensor_scatter_nd_update(steps, [[12, 0]], [float("nan")])  # poisons the second unroll only
    cell = networks.for_problem("dm", "quadratic", seed=3)
    trainer = imitation.ImitationTrainer(cell, learning_rate=1e-3, unroll_length=10)
    trainer.train_epoch(gradients[:10], steps[:10])
    weights = [v.numpy().copy() for v in trainer.variables]
    loss, applied = trainer.train_epoch(gradients, steps)
    assert applied == 1 and not np.isfinite(loss)
    assert int(trainer.optimizer.iterations) == 2  # the first epoch's step and this epoch's first unroll
    assert any(not np.array_equal(w, v.numpy()) for w, v in zip(weights, trainer.variables))
    assert all(np.all(np.isfinite(v.numpy())) for v in trainer.variables)


def test_train_epoch_carries_the_state_and_returns_the_last_unroll(quadratic):
    """With a zero learning rate the weights stay: the returned loss is window 2's from window 1's final state."""
    gradients, steps = imitation.Teacher(quadratic, optimizers.Adam(0.01), generator(41)).trajectory(25)
    cell = networks.for_problem("dm", "quadratic", seed=9)
    trainer = imitation.ImitationTrainer(cell, learning_rate=0.0, unroll_length=10)
    returned, applied = trainer.train_epoch(gradients, steps)  # 25 steps: two windows of 10, the last 5 unused
    assert applied == 2
    assert int(trainer.optimizer.iterations) == 2
    zero = cell.initial_state(quadratic.num_params)
    _, state = trainer.imitation_loss(gradients[0:10], steps[0:10], zero)
    carried, _ = trainer.imitation_loss(gradients[10:20], steps[10:20], state)
    fresh, _ = trainer.imitation_loss(gradients[10:20], steps[10:20], zero)
    np.testing.assert_allclose(returned, float(carried), rtol=1e-5)
    assert abs(float(carried) - float(fresh)) > 1e-3 * float(carried)


# -- self-improving mixture -------------------------------------------------------------------------------------

def three_auxiliaries():
    return [optimizers.SGD(0.1), optimizers.Adam(0.01), optimizers.Adagrad(0.01)]


def test_mixture_starts_uniform():
    """The paper's start: p_0 = ... = p_k = 1/(k+1)."""
    mixture = imitation.MixtureRule(optimizers.SGD(1.0), three_auxiliaries(), generator(0))
    np.testing.assert_allclose(mixture.probabilities.numpy(), [0.25] * 4)


def test_mixture_with_zero_probability_is_the_learned_optimizer():
    """p = 0: every step is the cell's own, bit for bit; the auxiliaries still see every gradient."""
    cell = networks.CoordinateWiseDeepLSTM(seed=6)
    mixture = imitation.MixtureRule(cell, three_auxiliaries(), generator(1))
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
    mixture = imitation.MixtureRule(cell, [optimizers.SGD(0.1)], generator(2))
    mixture.set_auxiliary_probability(1.0)
    state = mixture.initial_state(6)
    for g in np.random.default_rng(4).standard_normal([5, 6]).astype(np.float32):
        delta, state = mixture.step(tf.constant(g), state)
        np.testing.assert_allclose(delta.numpy(), -0.1 * g, rtol=1e-6)


def test_mixture_choice_frequencies():
    """Each step draws one optimizer for all coordinates; empirical frequencies follow the probabilities.

    Rules are identified by their step on a gradient of ones: learned SGD(1), auxiliaries SGD(2), SGD(3), SGD(4).
    The probabilities are a variable, so a compiled loop follows later changes."""
    mixture = imitation.MixtureRule(optimizers.SGD(1.0), [optimizers.SGD(2.0), optimizers.SGD(3.0),
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
    mixture = imitation.MixtureRule(cell, three_auxiliaries(), generator(4))
    mixture.set_auxiliary_probability(0.0)
    mixed = meta.Trainer(quadratic, cell, generator(3), unroll_length=3, rule=mixture)
    trajectory = mixed.new_trajectory()
    loss, gradients = mixed.meta_gradient(trajectory)
    plain_loss, plain_gradients = plain.meta_gradient(trajectory._replace(state=trajectory.state[0]))
    np.testing.assert_allclose(float(loss), float(plain_loss), rtol=1e-6)
    for g, e in zip(gradients, plain_gradients):
        assert np.max(np.abs(e)) > 0
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-5, atol=1e-6 * np.max(np.abs(e)))

    only_sgd = imitation.MixtureRule(cell, [optimizers.SGD(0.1)], generator(4))
    only_sgd.set_auxiliary_probability(1.0)
    auxiliary = meta.Trainer(quadratic, cell, generator(3), unroll_length=3, rule=only_sgd)
    _, gradients = auxiliary.meta_gradient(auxiliary.new_trajectory())
    for g, var in zip(gradients, cell.trainable_variables):
        assert g is None or np.all(np.asarray(g) == 0), var.name


def test_auxiliary_probability_schedule():
    """1/(k+1) at epoch 0, linear decay, 0 from decay_epochs on (the paper: 0.33 -> 0 over 100 epochs)."""
    assert imitation.auxiliary_probability(0, 3, 100) == pytest.approx(0.25)
    assert imitation.auxiliary_probability(50, 3, 100) == pytest.approx(0.125)
    assert imitation.auxiliary_probability(75, 1, 100) == pytest.approx(0.125)
    assert imitation.auxiliary_probability(100, 3, 100) == 0.0
    assert imitation.auxiliary_probability(250, 3, 100) == 0.0
    assert imitation.auxiliary_probability(0, 2, 100) == pytest.approx(1 / 3)


@pytest.mark.parametrize("p", [-0.01, 0.34, 0.5, 1.0])
def test_invalid_auxiliary_probability(p):
    """Three auxiliaries: p must lie in [0, 1/3]; a rejected value leaves the probabilities as they were."""
    mixture = imitation.MixtureRule(optimizers.SGD(1.0), three_auxiliaries(), generator(0))
    mixture.set_auxiliary_probability(0.2)
    with pytest.raises(ValueError):
        mixture.set_auxiliary_probability(p)
    np.testing.assert_allclose(mixture.probabilities.numpy(), [0.4, 0.2, 0.2, 0.2], rtol=1e-6)


def test_boundary_auxiliary_probability():
    """p = 1/k is allowed: the learned optimizer gets probability 0."""
    mixture = imitation.MixtureRule(optimizers.SGD(1.0), three_auxiliaries(), generator(0))
    mixture.set_auxiliary_probability(1 / 3)
    np.testing.assert_allclose(mixture.probabilities.numpy(), [0.0, 1 / 3, 1 / 3, 1 / 3], atol=1e-7)
