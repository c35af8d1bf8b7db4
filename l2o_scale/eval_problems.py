"""The six optimizee groups of L2O-Scale's evaluation (`learned_optimizer/metatest.py`, SPEC_SCALE §5.3).

The three MLPs are l2o_tf's `mnist`, `mnist_relu` and `mnist_deeper` problems (the same networks: 784-20-10 or
784-20-20-10, N(0, 0.01) for every tensor, batch 128). The three ConvNets are not l2o_tf's: the eval copy's ConvNet
normalises with fixed inference statistics (mean 0, variance 1: a constant 1/sqrt(1.001)) where l2o_tf's DM convnets
use batch statistics, draws its conv biases N(0, 0.01), and ConvNetOrig (SAME convolutions without biases, no
pooling, batch 64) has no counterpart. They are built here on `problems.ClassifierProblem`.
"""
import dataclasses
import functools
import math

import tensorflow as tf

from l2o_tf import datasets
from l2o_tf import problems

INIT_STD = 0.01
BN_SCALE = 1.0 / math.sqrt(1.0 + 1e-3)  # tf.layers batch norm, training=False, never-updated statistics (0, 1)


@dataclasses.dataclass(frozen=True, eq=False)
class BatchClassifierProblem(problems.ClassifierProblem):
    """A classifier with its own minibatch size (ConvNetOrig uses 64)."""

    batch_size: int = problems.BATCH_SIZE

    def sample_batch(self, rng):
        idx = rng.uniform([self.batch_size], 0, self.labels.shape[0], dtype=tf.int64)
        return tf.gather(self.images, idx), tf.gather(self.labels, idx)


def _convnet_logits(params, images, stride):
    """Eval-copy ConvNet: [conv VALID (stride of the first filter) + bias -> BN(inference) -> ReLU -> max-pool]
    x2, flatten, dense, ReLU on the logits."""
    w1, b1, w2, b2, fc_w, fc_b = params
    x = images
    for w, b in ((w1, b1), (w2, b2)):
        x = tf.nn.bias_add(tf.nn.conv2d(x, w, stride, "VALID"), b) * BN_SCALE
        x = tf.nn.max_pool2d(tf.nn.relu(x), 2, 2, "VALID")
    return tf.nn.relu(tf.matmul(tf.reshape(x, [tf.shape(x)[0], -1]), fc_w) + fc_b)


def _convnet_orig_logits(params, images):
    """ConvNetOrig (upstream's ConvNet): [conv SAME, no bias -> ReLU] x2, flatten, dense, plain logits."""
    w1, w2, fc_w, fc_b = params
    x = tf.nn.relu(tf.nn.conv2d(images, w1, 1, "SAME"))
    x = tf.nn.relu(tf.nn.conv2d(x, w2, 1, "SAME"))
    return tf.matmul(tf.reshape(x, [tf.shape(x)[0], -1]), fc_w) + fc_b


def _conv_layout(c_in, c1, c2, fc_in):
    return [("conv1/w", (3, 3, c_in, c1)), ("conv1/b", (c1,)), ("conv2/w", (5, 5, c1, c2)), ("conv2/b", (c2,)),
            ("fc/w", (fc_in, 10)), ("fc/b", (10,))]


# group -> (--include flag, l2o_tf problem name or None, dataset, layout, logits, batch size)
GROUPS = {
    "mnist_mlp": ("include_mnist_mlp_problems", "mnist", "mnist", None, None, 128),
    "mnist_mlp_relu": ("include_mnist_mlp_relu_problems", "mnist_relu", "mnist", None, None, 128),
    "mnist_mlp_deeper": ("include_mnist_mlp_deeper_problems", "mnist_deeper", "mnist", None, None, 128),
    "mnist_conv": ("include_mnist_conv_problems", None, "mnist", _conv_layout(1, 16, 32, 512),
                   functools.partial(_convnet_logits, stride=1), 128),
    "mnist_conv_orig": ("include_mnist_conv_orig_problems", None, "mnist",
                        [("conv1/w", (3, 3, 1, 8)), ("conv2/w", (5, 5, 8, 8)), ("fc/w", (6272, 10)),
                         ("fc/b", (10,))], _convnet_orig_logits, 64),
    "cifar10_conv": ("include_cifar10_conv_problems", None, "cifar10", _conv_layout(3, 16, 32, 32),
                     functools.partial(_convnet_logits, stride=2), 128),
}


def get(group, data_dir=None, download=False, dataset=None):
    """The test-split problem of `group` (a key of GROUPS); `dataset` = (images, labels) replaces the loaded split."""
    _, name, data, layout, logits_fn, batch_size = GROUPS[group]
    if name is not None:
        return problems.get(name, "test", data_dir=data_dir, download=download, dataset=dataset)
    if dataset is None:
        loaded = datasets.load(data, "test", data_dir=data_dir, download=download)
        dataset = (loaded.images, loaded.labels)
    image_shape = (28, 28, 1) if data == "mnist" else (32, 32, 3)
    images, labels = problems._check_dataset(dataset, image_shape, group)  # pylint: disable=protected-access
    names, shapes = map(tuple, zip(*layout))
    return BatchClassifierProblem(group, "test", names, shapes, (INIT_STD,) * len(names), logits_fn=logits_fn,
                                  images=tf.constant(images), labels=tf.constant(labels), batch_size=batch_size)
