"""Use any update rule (a learned optimizer or a baseline) on a Keras model's variables.

The rules are coordinate-wise and work on one flat vector, so the variables' gradients are flattened, stepped
together, and the update is split back onto the variables.
"""
import tensorflow as tf


def apply_update(rule, gradients, variables, state):
    """Add `rule`'s update for `gradients` to `variables`; returns the rule's new state.

    Start with `state = rule.initial_state(num_coordinates(variables))`; call inside a `tf.function` for speed.
    """
    flat = tf.concat([tf.reshape(tf.convert_to_tensor(g), [-1]) for g in gradients], axis=0)
    delta, state = rule.step(flat, state)
    sizes = [int(tf.size(v)) for v in variables]
    for variable, piece in zip(variables, tf.split(delta, sizes)):
        variable.assign_add(tf.reshape(piece, variable.shape))
    return state


def num_coordinates(variables):
    """Number of scalars in `variables`: the size of the rule's state."""
    return sum(int(tf.size(v)) for v in variables)
