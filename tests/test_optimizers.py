"""The hand-designed update rules against numpy readings of the TF1 formulas (SPEC_DM §4.2, §6.1) and TF1 itself."""
import numpy as np
import pytest
import tensorflow as tf

from l2o_tf import optimizers

STEPS, N = 10, 40


def random_gradients(seed, steps=STEPS, n=N):
    """Signed gradients whose magnitudes span 1e-4..1e1, so epsilon placement and accumulators matter."""
    rng = np.random.default_rng(seed)
    magnitude = 10.0 ** rng.uniform(-4, 1, size=[steps, n])
    return (np.sign(rng.standard_normal([steps, n])) * magnitude).astype(np.float32)


# -- numpy references, float64, written from the TF1 formulas ---------------------------------------------------

def np_sgd(gradients, lr):
    return [-lr * g for g in gradients]


def np_adam(gradients, lr, b1=0.9, b2=0.999, eps=1e-8):
    m = np.zeros(gradients.shape[1])
    v = np.zeros(gradients.shape[1])
    deltas = []
    for t, g in enumerate(gradients.astype(np.float64), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        lr_t = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        deltas.append(-lr_t * m / (np.sqrt(v) + eps))
    return deltas


def np_rmsprop(gradients, lr, decay=0.9, eps=1e-10):
    ms = np.ones(gradients.shape[1])
    deltas = []
    for g in gradients.astype(np.float64):
        ms = decay * ms + (1 - decay) * g * g
        deltas.append(-lr * g / np.sqrt(ms + eps))
    return deltas


def np_nag(gradients, lr, mu=0.9):
    a = np.zeros(gradients.shape[1])
    deltas = []
    for g in gradients.astype(np.float64):
        a = mu * a + g
        deltas.append(-lr * (g + mu * a))
    return deltas


def np_adagrad(gradients, lr, initial=0.1):
    acc = np.full(gradients.shape[1], initial)
    deltas = []
    for g in gradients.astype(np.float64):
        acc = acc + g * g
        deltas.append(-lr * g / np.sqrt(acc))
    return deltas


REFERENCES = {"sgd": np_sgd, "adam": np_adam, "rmsprop": np_rmsprop, "nag": np_nag, "adagrad": np_adagrad}

TF1 = {
    "sgd": lambda lr: tf.compat.v1.train.GradientDescentOptimizer(lr),
    "adam": lambda lr: tf.compat.v1.train.AdamOptimizer(lr),
    "rmsprop": lambda lr: tf.compat.v1.train.RMSPropOptimizer(lr),
    "nag": lambda lr: tf.compat.v1.train.MomentumOptimizer(lr, 0.9, use_nesterov=True),
    "adagrad": lambda lr: tf.compat.v1.train.AdagradOptimizer(lr),
}


def run_rule(rule, gradients):
    state = rule.initial_state(gradients.shape[1])
    deltas = []
    for g in gradients:
        delta, state = rule.step(tf.constant(g), state)
        deltas.append(delta.numpy())
    return np.stack(deltas)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_rule_matches_numpy_tf1_formula(name):
    """Ten steps on random gradients give the TF1 formula's deltas, step by step (state carried correctly)."""
    gradients = random_gradients(seed=len(name))
    rule = optimizers.get(name, 0.05)
    deltas = run_rule(rule, gradients)
    expected = np.stack(REFERENCES[name](gradients, 0.05))
    assert deltas.shape == (STEPS, N) and deltas.dtype == np.float32
    # float32: Adam's 1 - 0.999**t alone is off by ~1e-5 relative (0.999 is not exact in float32)
    np.testing.assert_allclose(deltas, expected, rtol=3e-5, atol=1e-8)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_rule_matches_tf_compat_v1_optimizer(name):
    """The same trajectory as the original's tf.train.*Optimizer applied to a variable (usable in TF2 eager)."""
    gradients = random_gradients(seed=100 + len(name))
    x0 = np.random.default_rng(1).standard_normal(N).astype(np.float32)
    variable = tf.Variable(x0)
    tf1 = TF1[name](0.05)
    rule = optimizers.get(name, 0.05)
    state = rule.initial_state(N)
    x = tf.constant(x0)
    for g in gradients:
        before = variable.numpy()
        tf1.apply_gradients([(tf.constant(g), variable)])
        delta, state = rule.step(tf.constant(g), state)
        x = x + delta
        # per step: the TF1 displacement (float32 rounding of x ~ 1 costs ~1e-7); over the run: the iterates
        np.testing.assert_allclose(delta.numpy(), variable.numpy() - before, rtol=2e-5, atol=5e-7)
        np.testing.assert_allclose(x.numpy(), variable.numpy(), rtol=0, atol=5e-6)
    assert np.max(np.abs(variable.numpy() - x0)) > 1e-2  # the comparison is not trivially between unmoved points


def test_rules_compile_to_the_same_deltas():
    """Rules run inside tf.function loops (Runner, Teacher): the compiled step equals the eager one."""
    gradients = random_gradients(seed=7)
    for name in sorted(REFERENCES):
        rule = optimizers.get(name, 0.01)

        @tf.function
        def loop(gs):
            state = rule.initial_state(N)
            out = tf.TensorArray(tf.float32, size=STEPS)
            for i in tf.range(STEPS):
                delta, state = rule.step(gs[i], state)
                out = out.write(i, delta)
            return out.stack()

        np.testing.assert_allclose(loop(tf.constant(gradients)).numpy(), run_rule(rule, gradients),
                                   rtol=1e-6, atol=1e-12, err_msg=name)


def test_first_steps_by_hand():
    """Hand-computed first steps: the TF1 initial slot values (Adam 0, RMSProp 1, Adagrad 0.1) are visible here."""
    g = tf.constant([2.0, -0.5])
    lr = 0.1
    adam, _ = optimizers.Adam(lr).step(g, optimizers.Adam(lr).initial_state(2))
    # t=1: lr_t = lr sqrt(0.001)/0.1, m = 0.1 g, sqrt(v) = sqrt(0.001)|g|  ->  -lr sign(g) (eps negligible;
    # float32 0.999 makes 1 - b2 come out 1.3e-5 low, hence the tolerance)
    np.testing.assert_allclose(adam.numpy(), [-0.1, 0.1], rtol=2e-5)
    rms, (ms,) = optimizers.RMSProp(lr).step(g, optimizers.RMSProp(lr).initial_state(2))
    np.testing.assert_allclose(ms.numpy(), [0.9 + 0.4, 0.9 + 0.025], rtol=1e-6)
    np.testing.assert_allclose(rms.numpy(), [-0.2 / np.sqrt(1.3), 0.05 / np.sqrt(0.925)], rtol=1e-6)
    nag, (a,) = optimizers.NAG(lr).step(g, optimizers.NAG(lr).initial_state(2))
    np.testing.assert_allclose(a.numpy(), [2.0, -0.5])
    np.testing.assert_allclose(nag.numpy(), [-0.1 * 1.9 * 2.0, 0.1 * 1.9 * 0.5], rtol=1e-6)
    ada, (acc,) = optimizers.Adagrad(lr).step(g, optimizers.Adagrad(lr).initial_state(2))
    np.testing.assert_allclose(acc.numpy(), [4.1, 0.35], rtol=1e-6)
    np.testing.assert_allclose(ada.numpy(), [-0.2 / np.sqrt(4.1), 0.05 / np.sqrt(0.35)], rtol=1e-6)
    sgd, state = optimizers.SGD(lr).step(g, optimizers.SGD(lr).initial_state(2))
    np.testing.assert_allclose(sgd.numpy(), [-0.2, 0.05], rtol=1e-6)
    assert state == ()


def test_adam_epsilon_is_tf1s():
    """eps = 1e-8 (TF1), not Keras' 1e-7, added to sqrt(v) before bias correction (TF1's "epsilon hat" form).

    First step on g: lr sqrt(1-b2)/(1-b1) * (1-b1) g / (sqrt(1-b2) |g| + eps); for g = 1e-7 the eps term is 3x
    the sqrt(v) term, so both the value and the placement of eps show (Keras' form would give ~0.9 here)."""
    delta, _ = optimizers.Adam(1.0).step(tf.constant([1e-7]), optimizers.Adam(1.0).initial_state(1))
    root = np.sqrt(1 - 0.999)
    np.testing.assert_allclose(delta.numpy(), [-root * 1e-7 / (root * 1e-7 + 1e-8)], rtol=1e-4)


def test_get_is_case_insensitive_and_sets_learning_rate():
    """Flags name optimizers in any case; the learning rate reaches the rule."""
    for name, cls in [("SGD", optimizers.SGD), ("Adam", optimizers.Adam), ("rmsProp", optimizers.RMSProp),
                      ("NAG", optimizers.NAG), ("AdaGrad", optimizers.Adagrad)]:
        rule = optimizers.get(name, 0.25)
        assert type(rule) is cls
        assert rule.learning_rate == 0.25
    assert sorted(optimizers.RULES) == ["adagrad", "adam", "nag", "rmsprop", "sgd"]


def test_get_unknown_name_lists_the_valid_ones():
    """A typo in --optimizers fails with the list of names, not a KeyError."""
    with pytest.raises(ValueError) as info:
        optimizers.get("nope", 0.1)
    message = str(info.value)
    assert "nope" in message
    for name in ("sgd", "adam", "rmsprop", "nag", "adagrad"):
        assert name in message
