"""Hand-designed optimizers with TF1 semantics, as update rules of the shared protocol (`l2o_tf.rules`).

One update rule object serves the evaluation baselines, the imitation-learning teachers and the self-improving
auxiliaries, so each rule is written once. The formulas are TF1's (the original ran `tf.train.*Optimizer`), which
differ from Keras in places: Adam's epsilon is 1e-8, RMSProp's mean square starts at 1 with epsilon inside the square
root, Adagrad's accumulator starts at 0.1 with no epsilon.
"""
import tensorflow as tf

from l2o_tf import rules


class Baseline(rules.CoordinatewiseRule):
    """A hand-designed coordinate-wise optimizer with a learning rate; its state is flat vectors (or nothing)."""

    def __init__(self, learning_rate):
        self.learning_rate = float(learning_rate)

    def flat_initial_state(self, num_coordinates):
        return ()

    def state_coordinates(self, state):
        vectors = [s for s in tf.nest.flatten(state) if s.shape.rank == 1]
        return vectors[0].shape[0] if vectors else None

    def __repr__(self):
        return f"{type(self).__name__}(learning_rate={self.learning_rate})"


class SGD(Baseline):
    name = "sgd"

    def flat_step(self, gradient, state):
        return -self.learning_rate * gradient, state


class Adam(Baseline):
    """tf.train.AdamOptimizer: lr_t = lr sqrt(1-b2^t)/(1-b1^t), delta = -lr_t m / (sqrt(v) + eps)."""

    name = "adam"

    def __init__(self, learning_rate, beta1=0.9, beta2=0.999, epsilon=1e-8):
        super().__init__(learning_rate)
        self.beta1, self.beta2, self.epsilon = float(beta1), float(beta2), float(epsilon)

    def flat_initial_state(self, num_coordinates):
        return tf.zeros([num_coordinates]), tf.zeros([num_coordinates]), tf.constant(0.0)

    def flat_step(self, gradient, state):
        m, v, t = state
        t = t + 1.0
        m = self.beta1 * m + (1.0 - self.beta1) * gradient
        v = self.beta2 * v + (1.0 - self.beta2) * tf.square(gradient)
        lr_t = self.learning_rate * tf.sqrt(1.0 - tf.pow(self.beta2, t)) / (1.0 - tf.pow(self.beta1, t))
        return -lr_t * m / (tf.sqrt(v) + self.epsilon), (m, v, t)


class RMSProp(Baseline):
    """tf.train.RMSPropOptimizer without momentum: ms starts at 1, delta = -lr g / sqrt(ms + eps)."""

    name = "rmsprop"

    def __init__(self, learning_rate, decay=0.9, epsilon=1e-10):
        super().__init__(learning_rate)
        self.decay, self.epsilon = float(decay), float(epsilon)

    def flat_initial_state(self, num_coordinates):
        return (tf.ones([num_coordinates]),)

    def flat_step(self, gradient, state):
        (ms,) = state
        ms = self.decay * ms + (1.0 - self.decay) * tf.square(gradient)
        return -self.learning_rate * gradient / tf.sqrt(ms + self.epsilon), (ms,)


class NAG(Baseline):
    """tf.train.MomentumOptimizer(use_nesterov=True): a = mu a + g, delta = -lr (g + mu a)."""

    name = "nag"

    def __init__(self, learning_rate, momentum=0.9):
        super().__init__(learning_rate)
        self.momentum = float(momentum)

    def flat_initial_state(self, num_coordinates):
        return (tf.zeros([num_coordinates]),)

    def flat_step(self, gradient, state):
        (accumulator,) = state
        accumulator = self.momentum * accumulator + gradient
        return -self.learning_rate * (gradient + self.momentum * accumulator), (accumulator,)


class Adagrad(Baseline):
    """tf.train.AdagradOptimizer: the accumulator starts at 0.1, delta = -lr g / sqrt(accumulator)."""

    name = "adagrad"

    def __init__(self, learning_rate, initial_accumulator=0.1):
        super().__init__(learning_rate)
        self.initial_accumulator = float(initial_accumulator)

    def flat_initial_state(self, num_coordinates):
        return (tf.fill([num_coordinates], self.initial_accumulator),)

    def flat_step(self, gradient, state):
        (accumulator,) = state
        accumulator = accumulator + tf.square(gradient)
        return -self.learning_rate * gradient * tf.math.rsqrt(accumulator), (accumulator,)


RULES = {rule.name: rule for rule in (SGD, Adam, RMSProp, NAG, Adagrad)}


def get(name, learning_rate):
    """An update rule by (case-insensitive) name: sgd, adam, rmsprop, nag, adagrad."""
    try:
        return RULES[name.lower()](learning_rate)
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}: expected one of {', '.join(sorted(RULES))}") from None
