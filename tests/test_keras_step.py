"""A learned optimizer dropped into a plain Keras model's training."""

import keras
import numpy as np
import tensorflow as tf

import l2o_tf
from l2o_tf import datasets
from l2o_tf import keras_step
from l2o_tf import optimizers
from l2o_tf import rules



def mlp():
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(20, activation="sigmoid"),
                              keras.layers.Dense(10)])
    return model


def train(rule, model, images, labels, steps):
    variables = model.trainable_variables
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(x, y, state):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x))
        return loss, keras_step.apply_update(rule, tape.gradient(loss, variables), variables, state)

    state = rule.initial_state(variables)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        batch = rng.integers(0, len(images), 128)
        loss, state = train_step(images[batch], labels[batch], state)
        losses.append(float(loss))
    return losses


def test_sgd_through_apply_update_is_plain_sgd():
    keras.utils.set_random_seed(0)
    model = mlp()
    before = [v.numpy() for v in model.trainable_variables]
    gradients = [np.full(v.shape, 0.5, np.float32) * (i + 1) for i, v in enumerate(model.trainable_variables)]
    state = keras_step.apply_update(optimizers.SGD(0.1), gradients, model.trainable_variables, ())
    assert state == ()
    for old, g, variable in zip(before, gradients, model.trainable_variables):
        np.testing.assert_allclose(variable.numpy(), old - 0.1 * g, rtol=1e-6)


def mnist_sample():
    sample = datasets.embedded_sample("train")
    return sample.images.reshape(-1, 784), sample.labels


def test_adam_through_apply_update_trains_a_keras_mlp():
    keras.utils.set_random_seed(0)
    model = mlp()
    assert rules.num_coordinates(model.trainable_variables) == 15910
    losses = train(optimizers.Adam(0.01), model, *mnist_sample(), steps=150)
    assert np.mean(losses[-20:]) < 0.6 * np.mean(losses[:5])


def test_the_imported_dm_cl_il_trains_a_keras_mlp():
    keras.utils.set_random_seed(0)
    losses = train(l2o_tf.load("dm_cl_il"), mlp(), *mnist_sample(), steps=150)
    assert np.mean(losses[-20:]) < 0.6 * np.mean(losses[:5])
