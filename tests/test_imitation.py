"""Imitation learning (SPEC_DM §6) and the self-improving mixture (paper §4.2) against numpy and hand computations."""
import logging

import numpy as np
import pytest
import tensorflow as tf

from l2o_tf import imitation, meta, networks, optimizers, problems, rules

B = problems.BATCH_SIZE


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


# -- the imitation epoch's initial state (--imitation_initial_state=main) -----------------------------------------

def test_main_task_state_gives_its_lstm_part_over_zero_moments_and_drops_a_non_finite_one(caplog):
    """RNNprop: the remembered h, c exactly, m, v and the step counter zero; zeros before any main trajectory and,
    with one warning, for a diverged one."""
    cell = networks.RNNprop(seed=0)
    zero = imitation.ImitationTrainer(cell).zero_state(3)
    remembered = imitation.MainTaskState(cell, 3)
    assert len(remembered.variables) == 4  # h, c of each LSTM
    assert all(np.all(part.numpy() == 0) for part in remembered.start(zero))
    _, state = cell.step(tf.constant([1.0, -2.0, 3.0]), cell.initial_state(3))
    remembered.remember(state)
    started = remembered.start(zero)
    assert len(started) == len(zero) == 7
    for part, main_part in zip(started[:4], state[:4]):
        np.testing.assert_array_equal(part.numpy(), main_part.numpy())
        assert np.any(part.numpy() != 0)
    assert np.any(state[4].numpy() != 0) and np.all(state[6].numpy() == 1)
    assert all(np.all(part.numpy() == 0) for part in started[4:])
    caplog.set_level(logging.WARNING)
    remembered.remember((state[0] * float("nan"),) + tuple(state[1:]))
    assert all(np.all(part.numpy() == 0) for part in remembered.start(zero))
    assert all(np.all(part.numpy() == 0) for part in remembered.start(zero))
    assert caplog.text.count("is not finite (its optimizee diverged): this imitation epoch starts from zeros") == 1
