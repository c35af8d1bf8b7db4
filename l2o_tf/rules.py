"""The one update-rule protocol every optimizer of the project implements.

A rule works on the optimizee's parameters as a **list of tensors in problem order**:

    state = rule.initial_state(params)                    # params: the tensors (or variables) to optimise
    deltas, state = rule.step(gradients, state, loss=None)  # new params = [p + d for p, d in zip(params, deltas)]

`state` is any nest of tensors (tuples and lists), so a whole trajectory compiles into one `tf.function`. `loss`
is the minibatch loss at the current parameters, for the rules that use it (the loss-guarded ones); the others
ignore it. Learned cells, TF1 baselines, imitation teachers, the self-improving mixture, L2O-Scale and the guards
all implement this, so the trainer, the evaluation harness and the Keras optimizer are written once.

Most rules of the paper are coordinate-wise: every scalar parameter is treated alike, so they run on one flat
vector of all coordinates (`CoordinatewiseRule`: write `flat_initial_state(n)` and `flat_step(gradient, state)`).
For them, and only for them, the 1-D form `rule.initial_state(n)` / `rule.step(gradient_vector, state)` also works.
"""
import math

import tensorflow as tf


class UpdateRule:
    """Base of every update rule; `name` is how the command line and the logs call it."""

    name = None

    def initial_state(self, params):
        raise NotImplementedError

    def step(self, gradients, state, loss=None):
        raise NotImplementedError


def shapes_of(params):
    """The static shapes of `params` (tensors, variables, arrays or shapes themselves) as tuples of ints."""
    shapes = []
    for p in params:
        shape = p if isinstance(p, (tuple, list, tf.TensorShape)) else getattr(p, "shape", None)
        if shape is None:
            raise TypeError(f"expected tensors, variables or shapes, got {type(p).__name__}")
        shapes.append(tuple(int(d) for d in shape))
    return shapes


def num_coordinates(params):
    """Number of scalars in `params`: an int (taken as it is), one tensor, or a list of them."""
    if isinstance(params, int):
        return params
    if _is_single_tensor(params):
        return int(math.prod(params.shape))
    return sum(math.prod(shape) for shape in shapes_of(params))


def flatten(tensors):
    """One flat float32 vector of `tensors`, concatenated in order."""
    return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)


def unflatten(flat, shapes):
    """Split `flat` back into tensors of `shapes`."""
    sizes = [math.prod(s) for s in shapes]
    return [tf.reshape(piece, s) for piece, s in zip(tf.split(flat, sizes), shapes)]


def _is_single_tensor(x):
    return isinstance(x, (tf.Tensor, tf.Variable)) or (hasattr(x, "shape") and hasattr(x, "dtype")
                                                      and not isinstance(x, (list, tuple)))


class CoordinatewiseRule(UpdateRule):
    """A rule that treats every coordinate alike, computed on one flat vector of all coordinates.

    Subclasses write `flat_initial_state(num_coordinates)` and `flat_step(gradient, state) -> (delta, state)` on
    1-D float32 vectors; this adapter concatenates the gradients, steps once, and splits the update back."""

    def initial_state(self, params):
        return self.flat_initial_state(num_coordinates(params))

    def step(self, gradients, state, loss=None):
        if _is_single_tensor(gradients):  # the 1-D form
            gradient = self._check_gradient(tf.reshape(gradients, [-1]), state)
            return self.flat_step(gradient, state)
        gradients = list(gradients)
        flat = self._check_gradient(flatten(gradients), state)
        delta, state = self.flat_step(flat, state)
        return unflatten(delta, [tuple(g.shape) for g in gradients]), state

    def flat_initial_state(self, num_coordinates):
        raise NotImplementedError

    def flat_step(self, gradient, state):
        raise NotImplementedError

    def state_coordinates(self, state):
        """The number of coordinates `state` was made for, when it can be read statically (else None)."""
        return None

    def _check_gradient(self, gradient, state):
        """A clear error for a gradient the rule cannot take, instead of a raw op error deep in TensorFlow."""
        gradient = tf.convert_to_tensor(gradient)
        if gradient.dtype != tf.float32:
            raise TypeError(f"{type(self).__name__}.step needs float32 gradients, got {gradient.dtype.name}; "
                            "cast them first (tf.cast(g, tf.float32))")
        expected, got = self.state_coordinates(state), gradient.shape[0]
        if expected is not None and got is not None and expected != got:
            raise ValueError(f"{type(self).__name__}.step got {got} gradient coordinates for a state made for "
                             f"{expected}; the gradients must match the parameters given to initial_state")
        return gradient
