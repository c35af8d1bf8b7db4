"""What every update rule of the shared protocol (l2o_tf.rules) must do; each rule's tests call `check_rule`.

    from conformance import check_rule
    check_rule(rule, params, reload=..., learned=True)

Checks: deltas match the parameters' shapes and dtype and are finite; the state keeps its structure and shapes
(so a tf.while_loop can carry it); a compiled step equals the eager one; a rule saved and loaded again (`reload`)
steps identically; a learned rule (`learned`) has a finite, non-zero meta-gradient through a few steps; and the
rule runs inside the evaluation harness's compiled loop (`problem`).
"""
import numpy as np
import tensorflow as tf

from l2o_tf import meta


def gradient_sequence(params, steps, seed=0):
    """`steps` lists of float32 gradients shaped like `params`, with magnitudes spanning 1e-6..1e1."""
    rng = np.random.default_rng(seed)
    sequence = []
    for _ in range(steps):
        sequence.append([tf.constant(rng.normal(size=tuple(p.shape)) * 10.0 ** rng.uniform(-6, 1, size=tuple(p.shape)),
                                     tf.float32) for p in params])
    return sequence


def run_steps(rule, params, gradients, state=None):
    state = rule.initial_state(params) if state is None else state
    all_deltas = []
    for g in gradients:
        deltas, state = rule.step(g, state)
        all_deltas.append([np.asarray(d) for d in deltas])
    return all_deltas, state


def check_rule(rule, params, reload=None, learned=False, problem=None, steps=4, rtol=1e-5):
    """Assert the protocol's contract for `rule` on `params` (a list of tensors)."""
    params = [tf.convert_to_tensor(p, tf.float32) for p in params]
    gradients = gradient_sequence(params, steps)

    # shapes, dtypes, finiteness, state structure
    state0 = rule.initial_state(params)
    deltas, state1 = rule.step(gradients[0], state0)
    assert isinstance(deltas, (list, tuple)) and len(deltas) == len(params)
    for d, p in zip(deltas, params):
        assert tuple(d.shape) == tuple(p.shape) and d.dtype == tf.float32
        assert np.all(np.isfinite(np.asarray(d)))
    tf.nest.assert_same_structure(state0, state1)
    for before, after in zip(tf.nest.flatten(state0), tf.nest.flatten(state1)):
        assert before.shape == after.shape and before.dtype == after.dtype

    # compiled equals eager
    eager, _ = run_steps(rule, params, gradients)
    step = tf.function(rule.step)
    state, compiled = rule.initial_state(params), []
    for g in gradients:
        d, state = step(g, state)
        compiled.append([np.asarray(x) for x in d])
    for e_step, c_step in zip(eager, compiled):
        for e, c in zip(e_step, c_step):
            np.testing.assert_allclose(c, e, rtol=rtol, atol=rtol * (np.max(np.abs(e)) + 1e-30))
    assert any(np.any(d != 0) for step_deltas in eager for d in step_deltas)  # the rule moves something

    # saved and loaded again: the same steps, bit for bit
    if reload is not None:
        again, _ = run_steps(reload(rule), params, gradients)
        for e_step, a_step in zip(eager, again):
            for e, a in zip(e_step, a_step):
                np.testing.assert_array_equal(a, e)

    # a learned rule: a finite, non-zero meta-gradient of a few steps' losses
    if learned:
        variables = rule.trainable_variables
        assert variables
        targets = [tf.ones_like(p) for p in params]
        with tf.GradientTape() as tape:
            state, x, loss = rule.initial_state(params), list(params), 0.0
            for _ in range(3):
                g = [xi - t for xi, t in zip(x, targets)]  # gradient of 0.5 ||x - 1||^2
                d, state = rule.step(g, state)
                x = [xi + di for xi, di in zip(x, d)]
                loss += tf.add_n([0.5 * tf.reduce_sum(tf.square(xi - t)) for xi, t in zip(x, targets)])
        meta_gradients = tape.gradient(loss, variables)
        assert all(g is not None and np.all(np.isfinite(np.asarray(g))) for g in meta_gradients)
        assert any(np.any(np.asarray(g) != 0) for g in meta_gradients)

    # inside the evaluation harness's compiled loop
    if problem is not None:
        runner = meta.Runner(problem, rule, tf.random.Generator.from_seed(0))
        carried, losses = runner.run(runner.new_trajectory(), 5)
        assert losses.shape == (5,) and np.all(np.isfinite(losses))
        assert [tuple(p.shape) for p in carried.params] == [tuple(s) for s in problem.param_shapes]
