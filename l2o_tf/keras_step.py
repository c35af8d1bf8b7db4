"""Use any update rule (a learned optimizer or a baseline) on a Keras model's variables, in a loop of your own.

(`l2o_tf.LearnedOptimizer` is the `model.fit` way; this is the few-lines way for a custom training loop.)
"""
import tensorflow as tf


def apply_update(rule, gradients, variables, state, loss=None):
    """Add `rule`'s update for `gradients` to `variables`; returns the rule's new state.

    Start with `state = rule.initial_state(variables)`; call inside a `tf.function` for speed.
    """
    deltas, state = rule.step([tf.convert_to_tensor(g) for g in gradients], state, loss)
    for variable, delta in zip(variables, deltas):
        variable.assign_add(delta)
    return state
