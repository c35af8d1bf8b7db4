"""L2O-Scale's meta-optimizer: TF1's `tf.train.RMSPropOptimizer` as a Keras optimizer (SPEC_SCALE §3.4, §8.8).

TF1 semantics differ from `keras.optimizers.RMSprop` in ways that matter at the original's settings: the mean
square starts at 1 (not 0) and epsilon (1e-20) sits inside the square root, so with meta-gradients of ~1e-8 the
first steps are ~lr * 1e-8 = 1e-14: the meta-parameters barely move. The original also replaces non-finite
meta-gradients by 0 and clips each element to +-gradient_clip_level before applying them (`sanitize`).
"""
import keras
import tensorflow as tf
from keras import ops

LEARNING_RATE = 1e-6
DECAY = 0.9
EPSILON = 1e-20
CLIP_LEVEL = 1e4


@keras.saving.register_keras_serializable(package="l2o_scale")
class TF1RMSProp(keras.optimizers.Optimizer):
    """ms <- decay ms + (1 - decay) g^2 (ms starts at 1); mom <- momentum mom + lr g / sqrt(ms + eps); w <- w - mom.

    The two slots are the original checkpoint's `RMSProp` (ms) and `RMSProp_1` (mom)."""

    def __init__(self, learning_rate=LEARNING_RATE, decay=DECAY, momentum=0.0, epsilon=EPSILON, name="RMSProp",
                 **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.decay, self.momentum, self.epsilon = float(decay), float(momentum), float(epsilon)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._mean_squares = self.add_optimizer_variables(var_list, "ms", initializer="ones")
        self._moments = self.add_optimizer_variables(var_list, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        ms, mom = self._mean_squares[index], self._moments[index]
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        self.assign(ms, self.decay * ms + (1.0 - self.decay) * ops.square(gradient))
        self.assign(mom, self.momentum * mom + lr * gradient / ops.sqrt(ms + self.epsilon))
        self.assign_sub(variable, mom)

    def slots(self, variable):
        """(ms, mom) of `variable`: the original's `<name>/RMSProp` and `<name>/RMSProp_1`."""
        index = self._get_variable_index(variable)
        return self._mean_squares[index], self._moments[index]

    def get_config(self):
        return {**super().get_config(), "decay": self.decay, "momentum": self.momentum, "epsilon": self.epsilon}


def sanitize(gradients, variables, clip_level=CLIP_LEVEL):
    """Non-finite entries to 0, then every entry clipped to [-clip_level, clip_level] (the original, §3.1).

    A missing gradient (a meta-parameter the objective does not reach) becomes zeros, as TF1 gave through its
    `cond`s, so that every slot is updated alike."""
    gradients = [tf.zeros(v.shape, tf.as_dtype(v.dtype)) if g is None else g for g, v in zip(gradients, variables)]
    return [tf.clip_by_value(tf.where(tf.math.is_finite(g), g, tf.zeros_like(g)), -clip_level, clip_level)
            for g in gradients]


def apply_sanitized(optimizer, gradients, variables, clip_level=CLIP_LEVEL):
    """Apply the sanitized gradients; the original always applies them, so this returns True."""
    optimizer.apply_gradients(zip(sanitize(gradients, variables, clip_level), variables))
    return tf.constant(True)
