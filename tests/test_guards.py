"""LGL2O and GL2O: exact checks on problems where the right choice is known, against numpy re-computations."""
import json

import numpy as np
import pytest
import tensorflow as tf

from l2o_tf import guards
from l2o_tf import meta
from l2o_tf import optimizers
from l2o_tf import problems
from l2o_tf import rules

from conftest import run_module


class FactorRule(rules.UpdateRule):
    """delta = -factors[t] * g at its t-th step; the state is the step counter (so one can see it advance)."""

    def __init__(self, factors):
        self.factors = tf.constant(factors, tf.float32)

    def initial_state(self, params):
        return tf.constant(0)

    def step(self, gradients, state, loss=None):
        factor = tf.gather(self.factors, tf.minimum(state, len(self.factors) - 1))
        return [-factor * g for g in gradients], state + 1


class HalfSquare:
    """f(x) = 0.5 ||x||^2 over a list of tensors (gradient = x); counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, candidates):
        self.calls += 1
        return [0.5 * tf.add_n([tf.reduce_sum(tf.square(p)) for p in c]) for c in candidates]


def run_guard(guard, x0, steps, states=None):
    """Steps `guard` on f = 0.5||x||^2 from x0 (a list of arrays); returns (x per step, choices, final state).
    `states`, a list, receives the guard's state after every step."""
    x = [tf.constant(p, tf.float32) for p in x0]
    state = guard.initial_state(x)
    xs, choices = [], []
    for _ in range(steps):
        deltas, state = guard.step(list(x), state)  # gradient of 0.5||x||^2 is x
        x = [p + d for p, d in zip(x, deltas)]
        xs.append(np.concatenate([p.numpy().ravel() for p in x]))
        choices.append(float(guard.record(state)))
        if states is not None:
            states.append(state)
    return xs, choices, state


X0 = [np.array([1.0, -2.0], np.float32), np.array([[0.5]], np.float32)]


def test_lgl2o_takes_the_lower_candidate_and_the_learned_state_always_advances():
    # learned factor 2.5 overshoots (x -> -1.5 x) on steps 0-2, then 0.9 (x -> 0.1 x); SGD 0.5 gives x -> 0.5 x
    objective = HalfSquare()
    guard = guards.make("lgl2o", FactorRule([2.5, 2.5, 2.5, 0.9]), objective, "sgd", 0.5)
    xs, choices, state = run_guard(guard, X0, 6)
    assert choices == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert int(state.learned) == 6          # the learned optimizer stepped every time
    expected = np.concatenate([p.ravel() for p in X0]) * np.array([0.5, 0.5, 0.5, 0.1, 0.1, 0.1]).cumprod()[:, None]
    np.testing.assert_allclose(np.array(xs), expected, rtol=1e-5)
    np.testing.assert_allclose(np.concatenate([p.numpy().ravel() for p in state.params]), xs[-1], rtol=1e-6)
    assert objective.calls == 6
    assert guard.cost() == {"extra_loss_evaluations_per_step": 2.0, "extra_gradient_evaluations_per_step": 0.0}


def test_lgl2o_tie_goes_to_the_learned_step():
    guard = guards.make("lgl2o", FactorRule([0.5]), HalfSquare(), "sgd", 0.5)
    _, choices, _ = run_guard(guard, X0, 2)
    assert choices == [1.0, 1.0]


def test_lgl2o_every_k_decides_on_steps_0_k_2k_and_keeps_the_choice_in_between():
    # the learned step wins at step 0 (0.9 beats SGD 0.5), loses from step 1 on (2.5); checks at steps 0 and 3
    objective = HalfSquare()
    guard = guards.make("lgl2o", FactorRule([0.9, 2.5]), objective, "sgd", 0.5, every=3)
    xs, choices, _ = run_guard(guard, X0, 5)
    assert choices == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert objective.calls == 2
    factors = np.array([0.1, -1.5, -1.5, 0.5, 0.5]).cumprod()
    np.testing.assert_allclose(np.array(xs), np.concatenate([p.ravel() for p in X0]) * factors[:, None], rtol=1e-5)
    assert guard.cost()["extra_loss_evaluations_per_step"] == pytest.approx(2 / 3)


# FactorRule([0.9, 2.5, 2.5, 0.9]) against SGD 0.5 on 0.5||x||^2: the learned step (x -> 0.1 x) beats the guard's
# (x -> 0.5 x) at factor 0.9 and loses at 2.5 (x -> -1.5 x); the learned counter picks the factor, so what the guard
# does to it decides the run. Per option: choices, the learned counter after each step, and x's factor per step.
LEARNED_STATE_RUNS = {
    "advance": ([1, 0, 0, 1, 1], [1, 2, 3, 4, 5], [0.1, 0.5, 0.5, 0.1, 0.1]),
    "keep": ([1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0.1, 0.5, 0.5, 0.5, 0.5]),
    "reset": ([1, 0, 1, 0, 1], [1, 0, 1, 0, 1], [0.1, 0.5, 0.1, 0.5, 0.1]),
}


# the same rule checked every 2 steps: the choice made at steps 0, 2, 4 is kept at 1, 3, 5, and the learned state
# follows the step taken (the learned one at step 1 whatever the option)
LEARNED_STATE_RUNS_EVERY_2 = {
    "advance": ([1, 1, 0, 0, 1, 1], [1, 2, 3, 4, 5, 6], [0.1, -1.5, 0.5, 0.5, 0.1, 0.1]),
    "keep": ([1, 1, 0, 0, 0, 0], [1, 2, 2, 2, 2, 2], [0.1, -1.5, 0.5, 0.5, 0.5, 0.5]),
    "reset": ([1, 1, 0, 0, 1, 1], [1, 2, 0, 0, 1, 2], [0.1, -1.5, 0.5, 0.5, 0.1, -1.5]),
}


@pytest.mark.parametrize("every, runs, steps", [(1, LEARNED_STATE_RUNS, 5), (2, LEARNED_STATE_RUNS_EVERY_2, 6)])
@pytest.mark.parametrize("learned_state", guards.LEARNED_STATES)
def test_learned_state_after_a_guard_step_by_hand(learned_state, every, runs, steps):
    choices_want, counters_want, factors = runs[learned_state]
    guard = guards.make("lgl2o", FactorRule([0.9, 2.5, 2.5, 0.9]), HalfSquare(), "sgd", 0.5, every=every,
                        learned_state=learned_state)
    states = []
    xs, choices, _ = run_guard(guard, X0, steps, states)
    assert choices == choices_want
    assert [int(s.learned) for s in states] == counters_want
    want = np.concatenate([p.ravel() for p in X0]) * np.array(factors).cumprod()[:, None]
    np.testing.assert_allclose(np.array(xs), want, rtol=1e-5)


def test_learned_moments_after_a_guard_step_are_kept_reset_or_advanced():
    # learned: Adam 0.5 (its moments stand for RNNprop's); guard: x -> 0.9 x at step 0 (worse than Adam's step),
    # x -> 0 at step 1 (better). After the guard's step the learned state is Adam's after the first gradient (keep),
    # its initial state (reset) or Adam's after both gradients (advance)
    x0 = np.concatenate([p.ravel() for p in X0])
    adam = optimizers.Adam(0.5)
    delta, after_one = adam.step(tf.constant(x0), adam.initial_state(3))
    x1 = x0 + delta.numpy()
    _, after_two = adam.step(tf.constant(x1), after_one)
    for learned_state, want in (("keep", after_one), ("reset", adam.initial_state(3)), ("advance", after_two)):
        guard = guards.make("lgl2o", optimizers.Adam(0.5), HalfSquare(), FactorRule([0.1, 1.0]),
                            learned_state=learned_state)
        xs, choices, state = run_guard(guard, X0, 2)
        assert choices == [1.0, 0.0]
        np.testing.assert_allclose(xs[0], x1, rtol=1e-6)
        np.testing.assert_array_equal(xs[1], np.zeros(3))
        for got, expected in zip(tf.nest.flatten(state.learned), tf.nest.flatten(want)):
            np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6)
        assert float(state.learned[2]) == {"keep": 1.0, "reset": 0.0, "advance": 2.0}[learned_state]


def gl2o_numpy(x0, factors, lr, steps, mu_update, delta=0.01):
    """Safe-L2O with a gradient-descent guard on 0.5||x||^2, written out: (x per step, choices, mu per step)."""
    x = np.concatenate([p.ravel() for p in x0]).astype(np.float64)
    mu = np.linalg.norm(x)
    history = [mu] * guards.RECENT_MAX
    xs, choices, mus = [], [], []
    for t in range(steps):
        learned = x - factors[min(t, len(factors) - 1)] * x
        residual = np.linalg.norm(learned)            # the gradient there is the point itself
        if residual < (1 - delta) * mu:
            x = learned
            choices.append(1.0)
            if mu_update == "ema":
                mu = guards.EMA_WEIGHT * residual + (1 - guards.EMA_WEIGHT) * mu
            elif mu_update == "geometric":
                mu = (1 - delta) * mu
            elif mu_update == "recent":
                mu = residual
            else:
                history = [residual] + history[:-1]
                mu = max(history)
        else:
            x = x - lr * x
            choices.append(0.0)
        xs.append(x.copy())
        mus.append(mu)
    return xs, choices, mus


@pytest.mark.parametrize("mu_update", guards.MU_UPDATES)
def test_gl2o_acceptance_and_mu_against_a_hand_computation(mu_update):
    # a learned step that alternates between progress, standstills and blow-ups (x -> 11 x, 6 x, 21 x, 4 x)
    factors = [0.7, 0.5, -10.0, 0.9, 0.0, -5.0, 0.95, 0.3, -20.0, 0.9, 0.99, 0.2, 0.005, 0.9, 0.6, 0.5, -3.0, 0.0, 0.8]
    objective = HalfSquare()
    guard = guards.make("gl2o", FactorRule(factors), objective, "sgd", 0.1, mu_update=mu_update)
    xs, choices, state = run_guard(guard, X0, len(factors))
    want_xs, want_choices, want_mus = gl2o_numpy(X0, factors, 0.1, len(factors), mu_update)
    assert choices == want_choices
    assert 0.0 in choices and 1.0 in choices
    np.testing.assert_allclose(np.array(xs), np.array(want_xs), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(state.mu[0]), want_mus[-1], rtol=1e-5)
    assert objective.calls == len(factors)


def test_gl2o_mu_starts_at_the_first_gradient_norm():
    guard = guards.make("gl2o", FactorRule([3.0]), HalfSquare(), "sgd", 0.1)   # always rejected: mu stays mu_0
    _, choices, state = run_guard(guard, X0, 3)
    assert choices == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(float(state.mu[0]), np.linalg.norm(np.concatenate([p.ravel() for p in X0])),
                               rtol=1e-6)


def test_adam_guard_keeps_its_own_state_every_step():
    # the guard optimizer steps every time too: after 3 steps its Adam counter is 3 though the learned step won
    guard = guards.make("lgl2o", FactorRule([0.9]), HalfSquare(), "adam", 0.01)
    _, choices, state = run_guard(guard, X0, 3)
    assert choices == [1.0, 1.0, 1.0]
    assert float(state.guard[2]) == 3.0


def test_bad_options_are_one_line_errors():
    with pytest.raises(guards.GuardError, match="unknown guard"):
        guards.make("safe", FactorRule([1.0]), HalfSquare(), "sgd", 0.1)
    with pytest.raises(guards.GuardError, match="guard optimizer"):
        guards.make("lgl2o", FactorRule([1.0]), HalfSquare(), "lbfgs", 0.1)
    with pytest.raises(guards.GuardError, match="positive learning rate"):
        guards.make("lgl2o", FactorRule([1.0]), HalfSquare(), "sgd", None)
    with pytest.raises(guards.GuardError, match="every"):
        guards.make("lgl2o", FactorRule([1.0]), HalfSquare(), "sgd", 0.1, every=0)
    with pytest.raises(guards.GuardError, match="mu update"):
        guards.make("gl2o", FactorRule([1.0]), HalfSquare(), "sgd", 0.1, mu_update="median")
    with pytest.raises(guards.GuardError, match="batch"):
        guards.GuardedProblem(None, None, batch="next")
    with pytest.raises(guards.GuardError, match="unknown learned_state 'forget': expected one of advance, keep, reset"):
        guards.make("gl2o", FactorRule([1.0]), HalfSquare(), "sgd", 0.1, learned_state="forget")


def tiny_classifier(seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((300, 28, 28, 1), np.float32)
    labels = rng.integers(0, 10, 300).astype(np.int32)
    return problems.get("mnist", mode="test", dataset=(images, labels))


def test_fresh_batch_is_one_minibatch_for_both_candidates():
    problem = tiny_classifier()
    params = problem.init_params(tf.random.Generator.from_seed(1))
    other = [p + 0.01 for p in params]
    view = guards.GuardedProblem(problem, tf.random.Generator.from_seed(7), "fresh")
    losses = view([params, other])
    images, labels = problem.sample_batch(tf.random.Generator.from_seed(7))  # the same draw, replayed
    np.testing.assert_allclose([float(v) for v in losses],
                               [float(problem.batch_loss(params, images, labels)),
                                float(problem.batch_loss(other, images, labels))], rtol=1e-6)


def test_own_batch_is_the_steps_minibatch():
    problem = tiny_classifier()
    params = problem.init_params(tf.random.Generator.from_seed(1))
    view = guards.GuardedProblem(problem, tf.random.Generator.from_seed(7), "own")
    step_rng = tf.random.Generator.from_seed(3)

    @tf.function
    def step_then_compare():
        loss = view.loss(params, (), step_rng)
        return loss, view([params])[0]

    loss, compared = step_then_compare()
    assert float(loss) == float(compared)


def test_guarded_run_in_the_compiled_runner_records_choices_and_stays_in_sync():
    # quadratic (deterministic): a learned step that overshoots after 5 steps; LGL2O must switch to SGD then
    problem = problems.get("quadratic")
    learned = FactorRule([0.01] * 5 + [50.0])
    rule, view = guards.guard_problem(problem, learned, seed=0, guard="lgl2o", guard_optimizer="sgd",
                                      guard_learning_rate=0.01)
    runner = meta.Runner(view, rule, tf.random.Generator.from_seed(0))
    trajectory = runner.new_trajectory()
    trajectory, losses = runner.run(trajectory, 12)
    for a, b in zip(trajectory.params, trajectory.state.params):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert float(rule.record(trajectory.state)) == 0.0
    assert np.all(np.diff(losses) < 0)                  # the guard never lets the loss rise here
    plain = meta.Runner(problem, learned, tf.random.Generator.from_seed(0))
    _, unguarded = plain.run(plain.new_trajectory(), 12)
    np.testing.assert_allclose(losses[:5], unguarded[:5], rtol=1e-5)   # the learned steps, while they are better
    assert unguarded[-1] > 100 * losses[-1]
    sgd = meta.Runner(problem, optimizers.SGD(0.01), tf.random.Generator.from_seed(0))
    _, sgd_losses = sgd.run(sgd.new_trajectory(), 12)
    assert losses[-1] <= sgd_losses[-1]


def test_runner_records_every_choice():
    # the quadratic case above: learned (a tie with SGD) for 5 steps, then the guard's step
    problem = problems.get("quadratic")
    rule, view = guards.guard_problem(problem, FactorRule([0.01] * 5 + [50.0]), seed=0, guard="lgl2o",
                                      guard_optimizer="sgd", guard_learning_rate=0.01)
    records = []
    runner = meta.Runner(view, rule, tf.random.Generator.from_seed(0), records=records)
    trajectory = runner.new_trajectory()
    runner.run(trajectory, 7, chunk=3)
    assert records == [1.0] * 5 + [0.0] * 2
    plain = []
    meta.Runner(problem, optimizers.SGD(0.1), tf.random.Generator.from_seed(0), records=plain)
    assert plain == []
    from l2o_tf import evaluate
    losses = evaluate.evaluate(problem, optimizers.SGD(0.1), 3, 1, 0, records=plain)
    assert plain == [] and losses.shape == (3,)  # a rule without `record` records nothing


def test_evaluate_with_a_guard_records_the_choices_and_equals_the_library_run(tmp_path, new_user_env):
    from l2o_tf import datasets, evaluate, models
    code, output = run_module("l2o_tf.evaluate_dm", new_user_env, f"--path={models.shipped_path('dm')}",
                              "--problem=mnist", "--num_steps=40", "--seed=5", f"--output_path={tmp_path}",
                              "--guard=lgl2o", "--guard_learning_rate=1", "--guard_batch=own",
                              "--guard_learned_state=reset")
    assert code == 0, output
    assert "Guard lgl2o: learned step taken at" in output and "2 extra loss" in output
    with np.load(tmp_path / "L2L_eval_loss_record.pickle-mnist.npz") as data:
        losses, choices, run_flags = data["losses"], data["learned_step"], json.loads(str(data["flags"]))
    assert run_flags["learned_state"] == "reset"
    sample = datasets.embedded_sample("test")
    problem = problems.get("mnist", mode="test", dataset=(sample.images, sample.labels))

    def library_run(learned_state):
        rule, view = guards.guard_problem(problem, models.load("dm"), 5, "lgl2o", batch="own", guard_optimizer="sgd",
                                          guard_learning_rate=1.0, learned_state=learned_state)
        records = []
        return evaluate.evaluate(view, rule, 40, 1, 5, records=records), records

    want, want_choices = library_run("reset")
    np.testing.assert_array_equal(losses, want)
    np.testing.assert_array_equal(choices, want_choices)
    assert 0 < np.mean(choices) < 1 and not np.array_equal(library_run("advance")[0], want)  # the flag mattered


def test_guards_of_several_seeds_in_one_run_record_what_each_records_alone(tmp_path):
    """run_and_record_seeds with LGL2O on seeds 5 and 6 (each seed's guard draws its own comparison batches): each
    seed's losses and choices equal `evaluate` of that seed alone."""
    from l2o_tf import datasets, evaluate, models
    sample = datasets.embedded_sample("test")
    problem = problems.get("mnist", mode="test", dataset=(sample.images, sample.labels))
    learned, options = models.load("dm"), {"guard": "lgl2o", "guard_optimizer": "sgd", "guard_learning_rate": 1.0}
    lanes = []
    for seed in (5, 6):
        rule, view = guards.guard_problem(problem, learned, seed, **options)
        lanes.append((view, rule, seed, str(tmp_path / f"seed{seed}")))
    evaluate.run_and_record_seeds(lanes, "L2L", 30, 1, {"problem": "mnist"}, guard=options)
    for seed in (5, 6):
        with np.load(tmp_path / f"seed{seed}" / "L2L_eval_loss_record.pickle-mnist.npz") as data:
            losses, choices = data["losses"], data["learned_step"]
        rule, view = guards.guard_problem(problem, learned, seed, **options)
        want_choices = []
        want = evaluate.evaluate(view, rule, 30, 1, seed, records=want_choices)
        np.testing.assert_allclose(losses, want, rtol=1e-5)
        np.testing.assert_array_equal(choices, want_choices)
        assert 0 < np.mean(choices) < 1  # both candidates won somewhere: the comparison is exercised


@pytest.mark.parametrize("flags, message", [
    (["--guard=safe", "--guard_learning_rate=1"], "unknown --guard='safe'"),
    (["--guard=lgl2o"], "--guard needs --guard_learning_rate"),
    (["--guard=lgl2o", "--guard_learning_rate=fast"], "--guard_learning_rate must be a number"),
    (["--guard=gl2o", "--guard_learning_rate=1", "--guard_mu_update=median"], "unknown --guard_mu_update"),
    (["--guard=lgl2o", "--guard_learning_rate=1", "--guard_learned_state=forget"],
     "unknown --guard_learned_state='forget': expected one of advance, keep, reset"),
    (["--guard=lgl2o", "--guard_learning_rate=tuned:/no/such.json"], "no such tuned-rates file"),
])
def test_bad_guard_flags_are_one_line_errors(flags, message, new_user_env):
    from l2o_tf import models
    code, output = run_module("l2o_tf.evaluate_dm", new_user_env, f"--path={models.shipped_path('dm')}", *flags)
    lines = [line for line in output.strip().splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and message in lines[0], output
