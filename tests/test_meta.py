"""Meta-training unrolls and plain runs (SPEC_DM §4) against straightforward re-implementations in the test."""
import numpy as np
import pytest
import tensorflow as tf

from l2o_tf import meta, networks, optimizers, problems, rules

B = problems.BATCH_SIZE


def generator(seed):
    return tf.random.Generator.from_seed(seed)


def snapshot(variables):
    return [np.array(v.numpy()) for v in variables]


# -- numpy quadratic: f(x) = mean_b ||W_b x_b - y_b||^2 --------------------------------------------------------

def np_quadratic(flat, w, y):
    residual = np.einsum("bij,bj->bi", w, flat.reshape(B, 10)) - y
    return np.mean(np.sum(residual ** 2, axis=1))


def np_quadratic_gradient(flat, w, y):
    residual = np.einsum("bij,bj->bi", w, flat.reshape(B, 10)) - y
    return (2.0 / B * np.einsum("bij,bi->bj", w, residual)).reshape(-1)


def as64(trajectory):
    w, y = (np.asarray(c, np.float64) for c in trajectory.constants)
    return flat64(trajectory.params), w, y, flat64(trajectory.scale)


def flat64(tensors):
    return np.asarray(rules.flatten(tensors), np.float64)


# -- the straightforward meta-gradient: nested tapes, f_0 + ... + f_T, stop_gradient on g unless 2nd derivatives --

def reference_meta_gradient(problem, cell, trajectory, rng, unroll_length, second_derivatives):
    params, state, constants, scale = trajectory
    x, scale = rules.flatten(params), rules.flatten(scale)
    with tf.GradientTape() as outer:
        losses = []
        for t in range(unroll_length + 1):
            with tf.GradientTape() as inner:
                inner.watch(x)
                loss = problem.flat_loss(scale * x, constants, rng)  # draws this step's minibatch
            gradient = inner.gradient(loss, x)
            if not second_derivatives:
                gradient = tf.stop_gradient(gradient)
            losses.append(loss)
            if t < unroll_length:
                delta, state = cell.step(gradient, state)
                x = x + delta
        meta_loss = tf.add_n(losses)
    return meta_loss, outer.gradient(meta_loss, cell.trainable_variables)


def assert_gradients_close(actual, expected, rtol=1e-5):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        e = np.asarray(e)
        assert np.max(np.abs(e)) > 0
        np.testing.assert_allclose(np.asarray(a), e, rtol=rtol, atol=rtol * np.max(np.abs(e)))


def test_meta_gradient_without_second_derivatives_matches_nested_tapes(quadratic):
    """The surrogate sum_t <sg(g_t), x_t> gives exactly d(f_0 + ... + f_T)/d theta with g under stop_gradient."""
    cell = networks.for_problem("dm", "quadratic", seed=3)
    trainer = meta.Trainer(quadratic, cell, generator(11), unroll_length=4)
    trajectory = meta.new_trajectory(quadratic, cell, generator(5))
    meta_loss, gradients = trainer.meta_gradient(trajectory)
    expected_loss, expected = reference_meta_gradient(quadratic, cell, trajectory, generator(11), 4, False)
    np.testing.assert_allclose(float(meta_loss), float(expected_loss), rtol=1e-6)
    assert_gradients_close(gradients, expected)


def test_meta_gradient_minibatches_and_second_derivatives(tiny_mnist):
    """On mnist (fresh minibatch per loss, nonzero Hessian): both modes match their nested-tape versions, and differ.

    The same generator seed gives the trainer and the reference the same minibatch at each of the T+1 losses."""
    cell = networks.for_problem("dm", "mnist", seed=4)
    trajectory = meta.new_trajectory(tiny_mnist, cell, generator(6))
    results = {}
    for second in (False, True):
        trainer = meta.Trainer(tiny_mnist, cell, generator(21), unroll_length=3, second_derivatives=second)
        meta_loss, gradients = trainer.meta_gradient(trajectory)
        expected_loss, expected = reference_meta_gradient(tiny_mnist, cell, trajectory, generator(21), 3, second)
        np.testing.assert_allclose(float(meta_loss), float(expected_loss), rtol=1e-6)
        assert_gradients_close(gradients, expected, rtol=1e-4)
        results[second] = [np.asarray(g) for g in gradients]
    # same forward (same losses), different gradient: the Hessian terms (~0.6% here) are 10x the tolerance above
    difference = max(np.max(np.abs(a - b)) / np.max(np.abs(b)) for a, b in zip(results[False], results[True]))
    assert difference > 1e-3


def test_one_train_unroll_is_one_meta_adam_step(quadratic):
    """train_unroll applies Adam (eps 1e-8) to the meta-gradient: first step = -lr sign(g) on every weight."""
    cell = networks.for_problem("dm", "quadratic", seed=7)
    trainer = meta.Trainer(quadratic, cell, generator(1), learning_rate=1e-3, unroll_length=5)
    trajectory = trainer.new_trajectory()
    _, gradients = trainer.meta_gradient(trajectory)  # quadratic: the loss draws nothing from the rng
    before = snapshot(trainer.variables)
    _, _, _, applied = trainer.train_unroll(trajectory)
    assert applied
    assert int(trainer.optimizer.iterations) == 1
    for old, var, g in zip(before, trainer.variables, gradients):
        g, change = np.asarray(g), var.numpy() - old
        assert np.max(np.abs(change)) > 5e-4  # every weight tensor moved
        large = np.abs(g) > 1e-3
        assert large.any()
        np.testing.assert_allclose(change[large], -1e-3 * np.sign(g[large]), rtol=1e-3)
        assert np.all(np.abs(change) <= 1e-3 * (1 + 1e-4))  # Adam never steps further than lr


def test_meta_loss_is_the_sum_of_the_21_losses(quadratic):
    """Default unroll (T=20): meta_loss = f(x_0) + ... + f(x_20), final_loss = f(x_20), x carried to x_20.

    Recomputed with numpy losses and gradients and the cell's own step (forward only, before the update)."""
    cell = networks.for_problem("dm", "quadratic", seed=2)
    trainer = meta.Trainer(quadratic, cell, generator(3))
    assert trainer.unroll_length == 20
    trajectory = trainer.new_trajectory()
    x, w, y, _ = as64(trajectory)
    state, losses = trajectory.state, []
    for t in range(21):
        losses.append(np_quadratic(x, w, y))
        if t < 20:
            delta, state = cell.step(tf.constant(np_quadratic_gradient(x, w, y), tf.float32), state)
            x = x + delta.numpy().astype(np.float64)
    carried, meta_loss, final_loss, applied = trainer.train_unroll(trajectory)
    assert applied
    assert abs(losses[0] - losses[-1]) > 1e-2 * abs(sum(losses))  # f_0 and f_T are both visible in the sum
    np.testing.assert_allclose(meta_loss, sum(losses), rtol=1e-4)
    np.testing.assert_allclose(final_loss, losses[-1], rtol=1e-4)
    np.testing.assert_allclose(rules.flatten(carried.params).numpy(), x, rtol=1e-4, atol=1e-4 * np.max(np.abs(x)))
    for mine, theirs in zip(state, carried.state):
        np.testing.assert_allclose(theirs.numpy(), mine.numpy(), rtol=1e-3, atol=1e-4)
    assert carried.constants is trajectory.constants and carried.scale is trajectory.scale


def test_a_few_meta_iterations_lower_the_meta_loss(quadratic):
    """20 meta-iterations of a DM cell on the quadratic clearly lower the final loss on fresh held-out trajectories."""
    cell = networks.for_problem("dm", "quadratic", seed=1)
    trainer = meta.Trainer(quadratic, cell, generator(7), learning_rate=1e-3)

    def held_out():  # the same 8 trajectories every time
        runner = meta.Runner(quadratic, cell, generator(123))
        return np.mean([runner.final_loss(runner.new_trajectory(), 20)[0] for _ in range(8)])

    before = held_out()
    meta_losses = []
    for _ in range(20):
        _, meta_loss, _, applied = trainer.train_unroll(trainer.new_trajectory())
        assert applied
        meta_losses.append(meta_loss)
    after = held_out()
    assert after < 0.2 * before
    assert np.mean(meta_losses[-5:]) < 0.2 * np.mean(meta_losses[:5])


def test_non_finite_meta_loss_skips_the_step(quadratic):
    """A NaN in the optimizee makes the meta-loss NaN: nothing is applied, weights and Adam slots stay put."""
    cell = networks.for_problem("dm", "quadratic", seed=5)
    trainer = meta.Trainer(quadratic, cell, generator(2), unroll_length=3)
    trajectory, _, _, applied = trainer.train_unroll(trainer.new_trajectory())
    assert applied
    weights, slots = snapshot(trainer.variables), snapshot(trainer.optimizer.variables)
    assert any(np.any(s != 0) for s in slots[1:])  # Adam moments are populated, so "unchanged" means something
    x = rules.flatten(trajectory.params).numpy()
    x[17] = np.nan
    poisoned = trajectory._replace(params=quadratic.unflatten(tf.constant(x)))
    _, meta_loss, final_loss, applied = trainer.train_unroll(poisoned)
    assert applied is False
    assert np.isnan(meta_loss) and np.isnan(final_loss)
    for old, var in zip(weights, trainer.variables):
        np.testing.assert_array_equal(var.numpy(), old)
    for old, var in zip(slots, trainer.optimizer.variables):
        np.testing.assert_array_equal(var.numpy(), old)
    assert int(trainer.optimizer.iterations) == 1
    # the guard does not stick: a finite unroll applies again
    _, _, _, applied = trainer.train_unroll(trajectory)
    assert applied and int(trainer.optimizer.iterations) == 2


@pytest.mark.parametrize("scale_bound", [0.0, 1.0])
def test_runner_records_f_of_the_next_iterate(quadratic, scale_bound):
    """SGD on the quadratic: losses[i] = f(scale x_{i+1}) with x_{i+1} = x_i - lr scale grad f(scale x_i), in numpy."""
    runner = meta.Runner(quadratic, optimizers.SGD(0.1), generator(4))
    trajectory = runner.new_trajectory(scale_bound)
    x, w, y, scale = as64(trajectory)
    expected = []
    for _ in range(30):
        x = x - 0.1 * scale * np_quadratic_gradient(scale * x, w, y)
        expected.append(np_quadratic(scale * x, w, y))
    carried, losses = runner.run(trajectory, 30)
    assert losses.shape == (30,) and losses.dtype == np.float32
    assert expected[-1] < 0.5 * expected[0]  # the run goes somewhere
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    np.testing.assert_allclose(rules.flatten(carried.params).numpy(), x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(runner.final_loss(trajectory, 30)[0], expected[-1], rtol=1e-5)


def test_runner_chunks_and_callback(quadratic):
    """chunk=7 over 30 steps: the same losses and iterate as one chunk; callback after 7, 14, 21, 28, 30 steps."""
    runner = meta.Runner(quadratic, optimizers.Adam(0.05), generator(9))
    trajectory = runner.new_trajectory()
    whole_trajectory, whole = runner.run(trajectory, 30)
    calls = []
    chunked_trajectory, chunked = runner.run(trajectory, 30, chunk=7,
                                             callback=lambda done, losses: calls.append((done, losses.copy())))
    np.testing.assert_allclose(chunked, whole, rtol=1e-6)
    np.testing.assert_allclose(flat64(chunked_trajectory.params), flat64(whole_trajectory.params), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(chunked_trajectory.state[2].numpy(), 30.0)  # Adam's step counter carried on
    assert [done for done, _ in calls] == [7, 14, 21, 28, 30]
    for done, losses in calls:
        assert losses.shape == (done,)
        np.testing.assert_array_equal(losses, chunked[:done])
    _, empty = runner.run(trajectory, 0)
    assert empty.shape == (0,)


def test_runner_minibatches_and_seed(tiny_mnist):
    """mnist: the gradient and the recorded loss each draw a fresh minibatch, in that order; same seed, same run."""
    lr, steps = 0.5, 5
    runner = meta.Runner(tiny_mnist, optimizers.SGD(lr), generator(8))
    trajectory = runner.new_trajectory()
    _, losses = runner.run(trajectory, steps)

    rng = generator(8)
    meta.new_trajectory(tiny_mnist, optimizers.SGD(lr), rng)  # same draws as the runner's new_trajectory
    x, expected = rules.flatten(trajectory.params), []
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tiny_mnist.flat_loss(x, (), rng)
        x = x - lr * tape.gradient(loss, x)
        expected.append(float(tiny_mnist.flat_loss(x, (), rng)))
    np.testing.assert_allclose(losses, expected, rtol=1e-5)

    again = meta.Runner(tiny_mnist, optimizers.SGD(lr), generator(8))
    np.testing.assert_array_equal(again.run(again.new_trajectory(), steps)[1], losses)
    other = meta.Runner(tiny_mnist, optimizers.SGD(lr), generator(9))
    assert not np.array_equal(other.run(other.new_trajectory(), steps)[1], losses)


def runner_losses(problem, rule, seed, steps):
    runner = meta.Runner(problem, rule, generator(seed))
    return runner.run(runner.new_trajectory(), steps)[1]


def test_runs_of_one_coordinatewise_rule_step_once_and_match_runs_alone(tiny_mnist):
    """Three seeds of one L2O-DM cell stepped on all their coordinates at once: each seed's losses are its run's
    alone (same minibatches, same iterates), across chunks."""
    cell = networks.CoordinateWiseDeepLSTM(seed=3)
    runs = meta.Runs([(tiny_mnist, cell, generator(seed)) for seed in (5, 6, 7)])
    assert runs.merged and len(runs.states) == 1
    losses = runs.run(12, chunk=5)
    assert losses.shape == (3, 12) and losses.dtype == np.float32
    for k, seed in enumerate((5, 6, 7)):
        np.testing.assert_allclose(losses[k], runner_losses(tiny_mnist, cell, seed, 12), rtol=2e-6)
    assert not np.allclose(losses[0], losses[1])  # the seeds are different runs


def test_runs_of_different_rules_step_each_its_own(quadratic):
    """Adam and SGD (different rules: not merged) in one loop: each as alone, and the runs continue where they
    stopped."""
    lanes = [(quadratic, optimizers.Adam(0.05), generator(1)), (quadratic, optimizers.SGD(0.1), generator(2))]
    runs = meta.Runs(lanes)
    assert not runs.merged and len(runs.states) == 2
    losses = np.concatenate([runs.run(10), runs.run(10)], axis=1)
    np.testing.assert_allclose(losses[0], runner_losses(quadratic, optimizers.Adam(0.05), 1, 20), rtol=1e-5)
    np.testing.assert_allclose(losses[1], runner_losses(quadratic, optimizers.SGD(0.1), 2, 20), rtol=1e-5)


def test_random_scaling(quadratic):
    """scale = exp(U(-3, 3)) per coordinate, drawn right after x; x * scale is the unscaled init of the same seed."""
    trajectory = meta.new_trajectory(quadratic, optimizers.SGD(0.1), generator(12), scale_bound=3.0)
    rng = generator(12)
    x0 = quadratic.init_flat(rng).numpy()
    log_scale = rng.uniform([quadratic.num_params], -3.0, 3.0).numpy()
    constants = quadratic.init_constants(rng)
    assert [s.shape for s in trajectory.scale] == [p.shape for p in trajectory.params] == [(B, 10)]
    scale = rules.flatten(trajectory.scale).numpy()
    assert scale.shape == x0.shape == (quadratic.num_params,)
    np.testing.assert_allclose(np.log(scale), log_scale, rtol=1e-5, atol=1e-5)
    assert np.all(scale >= np.exp(-3.0) * (1 - 1e-6)) and np.all(scale <= np.exp(3.0) * (1 + 1e-6))
    assert np.log(scale).min() < -2.5 and np.log(scale).max() > 2.5   # spread over the whole range
    assert abs(np.log(scale).mean()) < 0.2                             # centred (sd of the mean ~0.05)
    np.testing.assert_allclose(rules.flatten(trajectory.params).numpy() * scale, x0, rtol=1e-6, atol=1e-12)
    for mine, theirs in zip(constants, trajectory.constants):
        np.testing.assert_array_equal(theirs.numpy(), mine.numpy())
    # no scaling: ones, and x is the init itself
    plain = meta.new_trajectory(quadratic, optimizers.SGD(0.1), generator(12))
    np.testing.assert_array_equal(rules.flatten(plain.scale).numpy(), np.ones(quadratic.num_params, np.float32))
    np.testing.assert_array_equal(rules.flatten(plain.params).numpy(), x0)


def test_new_trajectory_carries_the_rules_initial_state(quadratic):
    """The trajectory holds the rule's fresh state (Adam: zeros, zeros, step 0) and the problem's constants."""
    trajectory = meta.new_trajectory(quadratic, optimizers.Adam(0.1), generator(0))
    m, v, t = trajectory.state
    assert m.shape == v.shape == (quadratic.num_params,)
    assert np.all(m.numpy() == 0) and np.all(v.numpy() == 0) and float(t) == 0.0
    w, y = trajectory.constants
    assert w.shape == (B, 10, 10) and y.shape == (B, 10)
