"""The self-improving baseline (the paper's §4.2; not in the original code).

Each optimizee step is taken by the learned optimizer or by an auxiliary optimizer drawn from a multinomial whose
auxiliary probabilities decay linearly to zero over the first training epochs; the meta-loss is unchanged.
"""
import numpy as np
import tensorflow as tf

from l2o_tf import rules


class MixtureRule(rules.UpdateRule):
    """Self-improving: each step applies the learned optimizer's update or one auxiliary's, drawn from a multinomial.

    Every optimizer sees every gradient and keeps its own state; only the drawn one's update moves the optimizee,
    so the meta-gradient flows through the learned optimizer's steps alone.
    """

    def __init__(self, learned, auxiliaries, rng):
        self.learned, self.auxiliaries, self.rng = learned, tuple(auxiliaries), rng
        count = len(self.auxiliaries) + 1
        self.probabilities = tf.Variable(np.full([count], 1.0 / count, np.float32), trainable=False)

    def set_auxiliary_probability(self, p):
        """Each auxiliary gets probability p; the learned optimizer the rest."""
        k = len(self.auxiliaries)
        if not 0.0 <= p * k <= 1.0:
            raise ValueError(f"auxiliary probability {p} is out of range for {k} auxiliaries")
        self.probabilities.assign([1.0 - k * p] + [p] * k)

    def initial_state(self, params):
        return (self.learned.initial_state(params), tuple(a.initial_state(params) for a in self.auxiliaries))

    def step(self, gradients, state, loss=None):
        learned_state, auxiliary_states = state
        proposals, new_auxiliary_states = [], []
        deltas, learned_state = self.learned.step(gradients, learned_state, loss)
        proposals.append(deltas)
        for auxiliary, auxiliary_state in zip(self.auxiliaries, auxiliary_states):
            deltas, auxiliary_state = auxiliary.step(gradients, auxiliary_state, loss)
            proposals.append(deltas)
            new_auxiliary_states.append(auxiliary_state)
        thresholds = tf.cumsum(self.probabilities)[:-1]
        choice = tf.reduce_sum(tf.cast(self.rng.uniform([]) >= thresholds, tf.int32))
        return select(proposals, choice), (learned_state, tuple(new_auxiliary_states))


def select(proposals, choice):
    """The `choice`-th of several update proposals (each a tensor or a list of tensors), chosen in-graph."""
    if isinstance(proposals[0], (list, tuple)):
        return [tf.gather(tf.stack(pieces), choice) for pieces in zip(*proposals)]
    return tf.gather(tf.stack(proposals), choice)


def auxiliary_probability(epoch, num_auxiliaries, decay_epochs):
    """1/(k+1) at training epoch 0, decaying linearly to 0 at `decay_epochs` (imitation epochs do not count)."""
    return max(0.0, 1.0 - epoch / float(decay_epochs)) / (num_auxiliaries + 1)
