"""Guards: a learned optimizer kept safe by a hand-designed one, as update rules of the shared protocol.

Learned optimizers are fast early and then plateau or diverge; a guard keeps the early speed and the late progress.
At every step both candidates are formed from the current parameters x, the learned optimizer's x + d_L and the
guard optimizer's x + d_G (SGD at a learning rate by default), and one of them is taken:

* LGL2O (loss-guarded, Premont-Schwarz et al.): the candidate with the lower loss, both estimated on one minibatch.
* GL2O (Safe-L2O, Heaton et al.): the learned candidate when the guard's residual there (the gradient norm, for a
  gradient-descent guard) is below (1 - delta) * mu; mu starts at the first residual and moves only on acceptance.

Both optimizers see every gradient. The guard optimizer advances its state whichever candidate wins; the learned
optimizer's state after a step that took the guard's candidate is `learned_state`'s choice (the same for both guards):
"advance" (default) as if its own step had been taken, "keep" as it was before the step, "reset" its initial state.

A rule only receives gradients, so a guard keeps the current parameters in its state and compares candidates with
an `objective`: `objective(candidates) -> list of scalar losses`, one per candidate (a list of tensors in problem
order), all on the same minibatch. `GuardedProblem` is that objective for a `l2o_tf.problems` problem run by
`meta.Runner`. `record(state)` is the last step's choice (1.0: the learned step was taken, 0.0: the guard's).
The decision functions (`lgl2o_takes_learned`, `gl2o_accepts`, `updated_mu`) are shared with the Keras
`GuardedModel`. docs/FIDELITY.md gives the reasoning behind every choice (only LGL2O's abstract is at hand),
docs/GUARDS.md the measurements.
"""
import collections

import tensorflow as tf

from l2o_tf import errors
from l2o_tf import names
from l2o_tf import optimizers
from l2o_tf import rules
from l2o_tf import seeding

GUARDS, BATCHES = names.GUARDS, names.GUARD_BATCHES
MU_UPDATES, LEARNED_STATES = names.GUARD_MU_UPDATES, names.GUARD_LEARNED_STATES
DELTA = 0.01        # Safe-L2O's acceptance margin: accept when residual < (1 - DELTA) * mu
EMA_WEIGHT = 0.1    # weight of the newest residual in the exponential moving average of mu
RECENT_MAX = 10     # residuals remembered by the "max" update

# learned_initial: the learned optimizer's initial state, kept for learned_state="reset" only (else ())
GuardState = collections.namedtuple("GuardState", ["params", "learned", "guard", "step", "took_learned", "mu",
                                                   "learned_initial"])


class GuardError(errors.UsageError):
    """A guard asked for with options it does not have."""


# -- decisions, shared by the update rules and the Keras GuardedModel ---------------------------------------------

def lgl2o_takes_learned(learned_loss, guard_loss):
    """LGL2O: the learned candidate unless the guard's is strictly lower (ties favour the learned step)."""
    return tf.logical_not(guard_loss < learned_loss)


def gl2o_accepts(residual, mu, delta=DELTA):
    """GL2O: accept the learned candidate when its residual is below (1 - delta) * mu."""
    return residual < (1.0 - delta) * mu


def updated_mu(mu, history, residual, mu_update, delta=DELTA):
    """(mu, history) after an accepted step whose new iterate has `residual`; `history` holds the RECENT_MAX
    latest accepted residuals (newest first) for the "max" update and is carried unchanged by the others."""
    if mu_update == "ema":
        return EMA_WEIGHT * residual + (1.0 - EMA_WEIGHT) * mu, history
    if mu_update == "geometric":
        return (1.0 - delta) * mu, history
    if mu_update == "recent":
        return residual, history
    if mu_update == "max":
        history = tf.concat([tf.reshape(residual, [1]), history[:-1]], axis=0)
        return tf.reduce_max(history), history
    raise GuardError(f"unknown GL2O mu update {mu_update!r}: expected one of {', '.join(MU_UPDATES)}")


def gradient_norm(gradients):
    """Euclidean norm of all coordinates of a list of gradients: the gradient-descent guard's residual (up to its
    learning rate, which cancels in the comparison with mu)."""
    return tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in gradients]))


# -- the guards as update rules -------------------------------------------------------------------------------------

class Guard(rules.UpdateRule):
    """Common part: both candidates every step, a decision every `every` steps (kept in between), x in the state,
    and the learned optimizer's state after a guard step by `learned_state` (one of LEARNED_STATES).

    Subclasses write `_decide(x, gradients, candidates, mu_state) -> (take_learned, mu_state)`."""

    extra_forward = 0   # loss evaluations per check, for the cost report
    extra_backward = 0  # gradient evaluations per check

    def __init__(self, learned, guard, objective, every=1, learned_state="advance"):
        if int(every) < 1:
            raise GuardError(f"a guard checks every k >= 1 steps, got {every}")
        if learned_state not in LEARNED_STATES:
            raise GuardError(f"unknown learned_state {learned_state!r}: expected one of {', '.join(LEARNED_STATES)}")
        self.learned, self.guard, self.objective, self.every = learned, guard, objective, int(every)
        self.learned_state = learned_state

    def initial_state(self, params):
        params = [tf.convert_to_tensor(p) for p in params]
        learned = self.learned.initial_state(params)
        return GuardState(params, learned, self.guard.initial_state(params), tf.constant(0, tf.int64),
                          tf.constant(1.0), self._initial_mu(), learned if self.learned_state == "reset" else ())

    def step(self, gradients, state, loss=None, params=None):
        """The protocol's step; `params`, when given, are the current parameters (the Keras optimizer passes its
        variables, so that anything else that moved them is seen), otherwise those kept in the state."""
        gradients = list(gradients)
        x = list(state.params) if params is None else [tf.convert_to_tensor(p) for p in params]
        learned_deltas, learned_state = self.learned.step(gradients, state.learned, loss)
        guard_deltas, guard_state = self.guard.step(gradients, state.guard, loss)
        candidates = ([p + d for p, d in zip(x, learned_deltas)], [p + d for p, d in zip(x, guard_deltas)])

        def decide():
            take, mu = self._decide(x, gradients, candidates, state.mu, state.step)
            return tf.cast(take, tf.float32), mu

        def keep():
            return state.took_learned, state.mu

        took_learned, mu = tf.cond(tf.equal(state.step % self.every, 0), decide, keep)
        take = took_learned > 0.5
        deltas = [tf.where(take, dl, dg) for dl, dg in zip(learned_deltas, guard_deltas)]
        params = [p + d for p, d in zip(x, deltas)]  # the same sum the caller forms, so x stays exact
        learned_state = self._learned_state_after(take, learned_state, state)
        return deltas, GuardState(params, learned_state, guard_state, state.step + 1, took_learned, mu,
                                  state.learned_initial)

    def _learned_state_after(self, take, stepped, state):
        """The learned optimizer's next state: `stepped` (its state after its own step) when its candidate is taken,
        and always for "advance"; otherwise the state before the step ("keep") or its initial state ("reset")."""
        if self.learned_state == "advance":
            return stepped
        refused = state.learned if self.learned_state == "keep" else state.learned_initial
        return tf.nest.map_structure(lambda s, r: tf.where(take, s, r), stepped, refused)

    def record(self, state):
        """1.0 when the last step took the learned candidate, 0.0 when it took the guard's."""
        return state.took_learned

    def cost(self):
        """The extra work per step, in optimizee loss and gradient evaluations (averaged over `every`)."""
        return {"extra_loss_evaluations_per_step": self.extra_forward / self.every,
                "extra_gradient_evaluations_per_step": self.extra_backward / self.every}

    def _initial_mu(self):
        return ()

    def _decide(self, x, gradients, candidates, mu_state, step):
        raise NotImplementedError


class LGL2O(Guard):
    """Loss-guarded: the candidate with the lower loss on one minibatch (two loss evaluations per check)."""

    name = "lgl2o"
    extra_forward = 2

    def _decide(self, x, gradients, candidates, mu_state, step):
        learned_loss, guard_loss = self.objective(list(candidates))
        return lgl2o_takes_learned(learned_loss, guard_loss), mu_state


class GL2O(Guard):
    """Safeguarded (Heaton et al.): the learned candidate when its gradient norm is below (1 - delta) * mu.

    mu starts at the first gradient norm (at x_0) and is updated, only on acceptance, by `mu_update`:
    "ema" (default) mu <- w r + (1 - w) mu with w = EMA_WEIGHT; "geometric" mu <- (1 - delta) mu; "recent" mu <- r;
    "max" mu <- max of the RECENT_MAX latest accepted r (mu_0 fills the memory at the start).
    One gradient evaluation (forward and backward) per check."""

    name = "gl2o"
    extra_forward = 1
    extra_backward = 1

    def __init__(self, learned, guard, objective, every=1, learned_state="advance", mu_update="ema", delta=DELTA):
        if mu_update not in MU_UPDATES:
            raise GuardError(f"unknown GL2O mu update {mu_update!r}: expected one of {', '.join(MU_UPDATES)}")
        super().__init__(learned, guard, objective, every, learned_state)
        self.mu_update, self.delta = mu_update, float(delta)

    def _initial_mu(self):
        # (mu, history of accepted residuals); mu < 0 marks "not yet initialised"
        return tf.constant(-1.0), tf.fill([RECENT_MAX], -1.0)

    def _decide(self, x, gradients, candidates, mu_state, step):
        mu, history = mu_state
        first = mu < 0.0
        mu = tf.where(first, gradient_norm(gradients), mu)
        history = tf.where(first, tf.fill([RECENT_MAX], mu), history)
        learned = candidates[0]
        with tf.GradientTape() as tape:
            tape.watch(learned)
            (loss,) = self.objective([learned])
        residual = gradient_norm(tape.gradient(loss, learned))
        accept = gl2o_accepts(residual, mu, self.delta)
        new_mu, new_history = updated_mu(mu, history, residual, self.mu_update, self.delta)
        return accept, (tf.where(accept, new_mu, mu), tf.where(accept, new_history, history))


def make(guard, learned, objective, guard_optimizer="sgd", guard_learning_rate=None, every=1, **options):
    """A guard by name ("lgl2o" or "gl2o") around the `learned` rule; the guard optimizer is a baseline by name
    (sgd, adam, rmsprop, nag, adagrad, TF1 semantics) at `guard_learning_rate`, or an update rule. `options`:
    `learned_state` (both guards), `mu_update` and `delta` (GL2O)."""
    if guard not in GUARDS:
        raise GuardError(f"unknown guard {guard!r}: expected one of {', '.join(GUARDS)}")
    if isinstance(guard_optimizer, str):
        if guard_learning_rate is None or not guard_learning_rate > 0:
            raise GuardError(f"the guard optimizer needs a positive learning rate, got {guard_learning_rate}")
        try:
            guard_optimizer = optimizers.get(guard_optimizer, guard_learning_rate)
        except ValueError as e:
            raise GuardError(f"guard optimizer: {e}") from None
    cls = LGL2O if guard == "lgl2o" else GL2O
    return cls(learned, guard_optimizer, objective, every=every, **options)


# -- the objective on a problem of l2o_tf.problems ------------------------------------------------------------------

class GuardedProblem:
    """A problem as a guard sees it: give it to `meta.Runner` instead of the problem, and to the guard as objective.

    Calls pass through to the problem. Its `loss` notes the per-trajectory constants (and, for `batch="own"`, the
    minibatch) of the loss the Runner differentiates just before each step, so that the guard's comparison can use
    them: `batch="fresh"` (default) draws one new minibatch from `rng` for all candidates, `batch="own"` reuses the
    step's own. (The note is taken while tracing: the Runner's step body evaluates the loss, then steps the rule.)
    Candidates are evaluated unscaled: evaluation runs have no random scaling."""

    def __init__(self, problem, rng, batch="fresh"):
        if batch not in BATCHES:
            raise GuardError(f"unknown guard batch {batch!r}: expected one of {', '.join(BATCHES)}")
        self.problem, self.rng, self.batch = problem, rng, batch
        self._constants, self._batch = (), None

    def __getattr__(self, name):
        return getattr(self.problem, name)

    def loss(self, params, constants, rng):
        self._constants = constants
        if self.batch == "own" and hasattr(self.problem, "sample_batch"):
            self._batch = self.problem.sample_batch(rng)
            return self.problem.batch_loss(params, *self._batch)
        return self.problem.loss(params, constants, rng)

    def __call__(self, candidates):
        if not hasattr(self.problem, "sample_batch"):  # deterministic (quadratic): no minibatch to choose
            return [self.problem.loss(c, self._constants, self.rng) for c in candidates]
        batch = self._batch if self.batch == "own" else self.problem.sample_batch(self.rng)
        if batch is None:
            raise GuardError("batch='own' needs the Runner to evaluate the step's loss first")
        return [self.problem.batch_loss(c, *batch) for c in candidates]


def guard_problem(problem, rule, seed, guard, batch="fresh", **options):
    """(guarded rule, problem view for the Runner): the evaluation harness's one call. The fresh minibatches come
    from their own generator (seeded from `seed`), so the gradients' minibatches are those of the unguarded run."""
    view = GuardedProblem(problem, seeding.generator(seed, "guard batches"), batch)
    return make(guard, rule, view, **options), view
