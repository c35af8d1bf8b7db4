"""Optimizee problems of the original L2O code (VITA-Group/L2O-Training-Techniques, ``problems.py``).

A :class:`Problem` is a pure, variable-free description of an optimizee, so that a whole unroll of a
learned optimizer can run inside one ``tf.function`` with no Python per step:

* ``param_names`` / ``param_shapes`` list the optimizee parameters in the original variable creation
  order.  Learned optimizers work on ONE flat float32 vector holding all of them, each flattened
  row-major and concatenated in that order; :meth:`Problem.flatten` / :meth:`Problem.unflatten`
  convert between the two views.
* :meth:`Problem.init_params` draws a fresh optimizee with the original initialisers and
  :meth:`Problem.init_constants` the per-trajectory constants (only ``quadratic`` has any: ``W, y``).
* :meth:`Problem.loss` is the scalar training objective.  Like the original, every call draws its own
  minibatch of 128 examples (uniform indices, with replacement, from the ``train`` split when
  meta-training and from the ``test`` split when evaluating), here from a ``tf.random.Generator``.

All of it is plain TF ops, differentiable w.r.t. the parameters (or the flat vector) under
``tf.GradientTape`` and usable in graph mode.  :func:`get` builds a problem by name.
"""
import dataclasses
import functools
import math
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from l2o_tf import datasets
from l2o_tf import names

MODES = ("train", "test")

BATCH_SIZE = 128        # every original problem uses minibatches of 128
NUM_CLASSES = 10
_INIT_STD = 0.01        # tf.random_normal_initializer(stddev=0.01), not truncated
_BN_EPS = 1e-3          # tf.layers and Sonnet batch-norm default


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """Common part: parameter layout, initialisation and the flat-vector view.

    ``param_stddevs[k]`` is the N(0, s) initialiser stddev of parameter k, with 0.0 meaning zeros.
    ``eq=False`` keeps identity hashing, so a problem can be handed to a ``tf.function``.
    """

    name: str
    mode: str
    param_names: tuple
    param_shapes: tuple
    param_stddevs: tuple

    @property
    def num_params(self) -> int:
        return sum(math.prod(shape) for shape in self.param_shapes)

    @property
    def is_convolutional(self) -> bool:
        """Whether any parameter is a conv kernel ([kh, kw, c_in, c_out])."""
        return any(len(shape) == 4 for shape in self.param_shapes)

    def init_params(self, rng: tf.random.Generator) -> list:
        return [rng.normal(shape, stddev=std) if std else tf.zeros(shape)
                for shape, std in zip(self.param_shapes, self.param_stddevs)]

    def init_constants(self, rng: tf.random.Generator) -> tuple:
        return ()

    def loss(self, params: Sequence[tf.Tensor], constants: tuple, rng: tf.random.Generator) -> tf.Tensor:
        raise NotImplementedError

    def flatten(self, params: Sequence[tf.Tensor]) -> tf.Tensor:
        return tf.concat([tf.reshape(p, [-1]) for p in params], axis=0)

    def unflatten(self, flat: tf.Tensor) -> list:
        sizes = [math.prod(shape) for shape in self.param_shapes]
        return [tf.reshape(part, shape) for part, shape in zip(tf.split(flat, sizes), self.param_shapes)]

    def init_flat(self, rng: tf.random.Generator) -> tf.Tensor:
        return self.flatten(self.init_params(rng))

    def flat_loss(self, flat: tf.Tensor, constants: tuple, rng: tf.random.Generator) -> tf.Tensor:
        return self.loss(self.unflatten(flat), constants, rng)


@dataclasses.dataclass(frozen=True, eq=False)
class QuadraticProblem(Problem):
    """128 independent 10-d least-squares problems; ``W`` and ``y`` are re-drawn per trajectory."""

    def init_constants(self, rng):
        return (rng.uniform([BATCH_SIZE, 10, 10]), rng.uniform([BATCH_SIZE, 10]))

    def loss(self, params, constants, rng=None):
        return quadratic_loss(params[0], *constants)


@dataclasses.dataclass(frozen=True, eq=False)
class ClassifierProblem(Problem):
    """Image classifier trained with softmax cross-entropy on minibatches drawn from a fixed split."""

    logits_fn: Callable = dataclasses.field(repr=False)
    images: tf.Tensor = dataclasses.field(repr=False)   # float32 [N, H, W, C], stored once
    labels: tf.Tensor = dataclasses.field(repr=False)   # int32 [N]
    data_source: str = "given arrays"                   # where images and labels came from (datasets.Dataset.source)

    def sample_batch(self, rng: tf.random.Generator):
        """128 uniform indices with replacement, as the original MNIST pipeline (also used for CIFAR)."""
        idx = rng.uniform([BATCH_SIZE], 0, self.labels.shape[0], dtype=tf.int64)
        return tf.gather(self.images, idx), tf.gather(self.labels, idx)

    def batch_loss(self, params, images, labels) -> tf.Tensor:
        """Mean sparse softmax cross-entropy on an explicit batch."""
        logits = self.logits_fn(params, images)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))

    def loss(self, params, constants, rng):
        return self.batch_loss(params, *self.sample_batch(rng))


def quadratic_loss(x, w, y):
    """Mean over instances of ||W x - y||^2 (the original squares it although its docstring says the norm)."""
    residual = tf.squeeze(tf.matmul(w, x[..., None]), -1) - y
    return tf.reduce_mean(tf.reduce_sum(tf.square(residual), axis=1))


# ---------------------------------------------------------------------------------------------------
# Network pieces
# ---------------------------------------------------------------------------------------------------

def _flatten_batch(x):
    return tf.reshape(x, [tf.shape(x)[0], -1])


def _batch_norm(x, offset=None):
    """Sonnet 1's BatchNorm (lenet): batch statistics over all axes but the channel one, biased variance, an
    optimised offset, no scale. Normalises with the current batch in train and test problem modes alike."""
    mean, variance = tf.nn.moments(x, axes=list(range(x.shape.rank - 1)))
    return tf.nn.batch_normalization(x, mean, variance, offset, None, _BN_EPS)


def _layers_batch_norm(x):
    """tf.layers.batch_normalization(training=True) on an NHWC tensor (mnist_conv, cifar_conv, nas): batch
    statistics, biased variance, at its initial gamma = 1, beta = 0, which the L2O never touches (SPEC_DM §3.9).

    TF1's tf.layers runs such inputs through the fused kernel, as here; on the CPU it makes an mnist_conv
    evaluation step 1.2-1.4x faster than `_batch_norm`'s composite ops (bench/README.md, "Batch norm on the conv
    problems").
    """
    channels = x.shape[-1]
    normalised, _, _ = tf.compat.v1.nn.fused_batch_norm(
        x, tf.ones([channels], x.dtype), tf.zeros([channels], x.dtype), epsilon=_BN_EPS, is_training=True)
    return normalised


def _max_pool(x):
    return tf.nn.max_pool2d(x, 2, 2, "VALID")


def _conv_bn_relu(x, w, b, stride=1, padding="VALID", pool=True):
    """Layer recipe of mnist_conv / cifar_conv / nas: conv + bias -> BN -> ReLU [-> max-pool 2x2/2].

    The bias is cancelled by the BN mean subtraction (dead parameter, kept because the original has it).
    """
    x = tf.nn.relu(_layers_batch_norm(tf.nn.bias_add(tf.nn.conv2d(x, w, stride, padding), b)))
    return _max_pool(x) if pool else x


def _mlp_logits(params, images, activation):
    x = _flatten_batch(images)
    num_layers = len(params) // 2
    for k in range(num_layers):
        x = tf.matmul(x, params[2 * k]) + params[2 * k + 1]
        if k < num_layers - 1:
            x = activation(x)
    return x


def _small_cnn_logits(params, images, stride):
    """mnist_conv (stride 1) and cifar_conv (stride 2): two conv layers and a ReLU-ed FC output."""
    w1, b1, w2, b2, fc_w, fc_b = params
    x = _conv_bn_relu(images, w1, b1, stride)
    x = _conv_bn_relu(x, w2, b2, stride)
    return tf.nn.relu(tf.matmul(_flatten_batch(x), fc_w) + fc_b)   # ReLU on the logits, as the original


def _nas_logits(params, images):
    """Fixed NAS cell: four 3x3 SAME conv-BN-ReLU ops, a 3x3 average pool and sums, global average, FC."""
    w0, b0, wa, ba, w1, b1, wb, bb, fc_w, fc_b = params
    conv = functools.partial(_conv_bn_relu, stride=1, padding="SAME", pool=False)
    node0 = conv(images, w0, b0)
    a = conv(node0, wa, ba)
    node1 = conv(node0, w1, b1)
    b = conv(node1, wb, bb)
    node2 = tf.nn.avg_pool2d(node1, 3, 1, "SAME") + a     # SAME average excludes the padding, as TF1
    node3 = node2 + b + node0
    return tf.nn.relu(tf.matmul(tf.reduce_mean(node3, axis=[1, 2]), fc_w) + fc_b)


def _lenet_logits(params, images):
    """Sonnet LeNet: [conv5x5 VALID -> BN(beta) -> sigmoid -> max-pool] x2, then MLP 400-120-84-10
    with sigmoid(BN(beta)) between layers and plain logits."""
    x = images
    for w, b, beta in (params[0:3], params[3:6]):
        x = _max_pool(tf.sigmoid(_batch_norm(tf.nn.bias_add(tf.nn.conv2d(x, w, 1, "VALID"), b), beta)))
    x = _flatten_batch(x)
    w0, b0, beta0, w1, b1, beta1, w2, b2 = params[6:]
    x = tf.sigmoid(_batch_norm(tf.matmul(x, w0) + b0, beta0))
    x = tf.sigmoid(_batch_norm(tf.matmul(x, w1) + b1, beta1))
    return tf.matmul(x, w2) + b2


# ---------------------------------------------------------------------------------------------------
# Parameter layouts: (name, shape, init stddev or 0.0 for zeros), in original creation order
# ---------------------------------------------------------------------------------------------------

def _mlp_layout(sizes):
    layout = []
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layout += [(f"mlp/linear_{k}/w", (n_in, n_out), _INIT_STD), (f"mlp/linear_{k}/b", (n_out,), _INIT_STD)]
    return layout


def _conv_layout(scope, kernel, c_in, c_out, w_name="weights1", b_name="biases1"):
    return [(f"{scope}/{w_name}", (kernel, kernel, c_in, c_out), _INIT_STD), (f"{scope}/{b_name}", (c_out,), 0.0)]


def _fc_layout(n_in):
    return [("fc_weights", (n_in, NUM_CLASSES), _INIT_STD), ("fc_bias", (NUM_CLASSES,), 0.0)]


def _lenet_layout():
    # Sonnet creates variables when a module is first connected: ConvNet2D connects conv_2d_i (w, b)
    # then its batch_norm_i (beta) layer by layer; the MLP connects linear_k (w, b) and then the
    # activation, which builds a fresh snt.BatchNorm (beta) named mlp/batch_norm, mlp/batch_norm_1.
    # Moving mean/variance are non-trainable constants, hence not parameters here.
    layout = []
    for i, (c_in, c_out) in enumerate([(3, 6), (6, 16)]):
        scope = f"conv_net_2d/conv_2d_{i}"
        layout += [(f"{scope}/w", (5, 5, c_in, c_out), _INIT_STD), (f"{scope}/b", (c_out,), _INIT_STD),
                   (f"conv_net_2d/batch_norm_{i}/beta", (c_out,), 0.0)]
    mlp = _mlp_layout((400, 120, 84, NUM_CLASSES))
    layout += mlp[0:2] + [("mlp/batch_norm/beta", (120,), 0.0)]
    layout += mlp[2:4] + [("mlp/batch_norm_1/beta", (84,), 0.0)]
    return layout + mlp[4:6]


_MNIST_SHAPE = (28, 28, 1)
_CIFAR_SHAPE = (32, 32, 3)

# name -> (dataset name, image shape, parameter layout, logits function)
_CLASSIFIERS = {
    "mnist": (_MNIST_SHAPE, _mlp_layout((784, 20, 10)),
              functools.partial(_mlp_logits, activation=tf.sigmoid)),
    "mnist_relu": (_MNIST_SHAPE, _mlp_layout((784, 20, 10)),
                   functools.partial(_mlp_logits, activation=tf.nn.relu)),
    "mnist_deeper": (_MNIST_SHAPE, _mlp_layout((784, 20, 20, 10)),
                     functools.partial(_mlp_logits, activation=tf.sigmoid)),
    "mnist_conv": (_MNIST_SHAPE,
                   _conv_layout("conv_layer1", 3, 1, 16) + _conv_layout("conv_layer2", 5, 16, 32) + _fc_layout(512),
                   functools.partial(_small_cnn_logits, stride=1)),
    "cifar_conv": (_CIFAR_SHAPE,
                   _conv_layout("conv_layer1", 3, 3, 16) + _conv_layout("conv_layer2", 5, 16, 32) + _fc_layout(32),
                   functools.partial(_small_cnn_logits, stride=2)),
    "lenet": (_CIFAR_SHAPE, _lenet_layout(), _lenet_logits),
    # Order follows the cell's wiring: node0, node0_onto_node2, node1, node1_onto_node3, then FC.
    "nas": (_CIFAR_SHAPE,
            _conv_layout("node0", 3, 3, 16, "weights", "biases")
            + _conv_layout("node0_onto_node2", 3, 16, 16, "weights", "biases")
            + _conv_layout("node1", 3, 16, 16, "weights", "biases")
            + _conv_layout("node1_onto_node3", 3, 16, 16, "weights", "biases")
            + _fc_layout(16),
            _nas_logits),
}
_QUADRATIC_LAYOUT = [("x", (BATCH_SIZE, 10), _INIT_STD)]


def _check_dataset(dataset, image_shape, name):
    """Validate a user (images, labels) pair and return it as float32 / int32 numpy arrays."""
    try:
        images, labels = dataset
    except (TypeError, ValueError):
        raise ValueError(f"dataset for {name!r} must be an (images, labels) pair") from None
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or images.shape[1:] != image_shape or images.shape[0] == 0:
        raise ValueError(f"images for {name!r} must have shape [N, {', '.join(map(str, image_shape))}] "
                         f"with N > 0, got {list(images.shape)}")
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"images for {name!r} must be floats in [0, 1], got dtype {images.dtype}")
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels for {name!r} must be integers of shape [{images.shape[0]}], "
                         f"got {labels.dtype} {list(labels.shape)}")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ValueError(f"labels for {name!r} must lie in [0, {NUM_CLASSES}), got [{labels.min()}, {labels.max()}]")
    return images.astype(np.float32, copy=False), labels.astype(np.int32, copy=False)


def data_source(problem):
    """Where the problem's data came from (`datasets.Dataset.source`); None for a problem without data."""
    return getattr(problem, "data_source", None)


def get(name: str, mode: str = "train", data_dir: str | None = None, download: bool = False,
        dataset=None) -> Problem:
    """Build problem ``name``; ``mode`` picks the data split ("train" for meta-training, "test" for evaluation).

    ``dataset`` optionally replaces the loaded split by an (images, labels) numpy pair.
    """
    if name not in names.PROBLEM_DATASETS:
        raise ValueError(f"unknown problem {name!r}; valid names: {', '.join(names.PROBLEM_DATASETS)}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if name == "quadratic":
        if dataset is not None:
            raise ValueError("the quadratic problem uses no dataset")
        return QuadraticProblem(name, mode, *map(tuple, zip(*_QUADRATIC_LAYOUT)))
    image_shape, layout, logits_fn = _CLASSIFIERS[name]
    source = "given arrays"
    if dataset is None:
        loaded = datasets.load(names.PROBLEM_DATASETS[name], mode, data_dir=data_dir, download=download)
        dataset, source = (loaded.images, loaded.labels), loaded.source
    images, labels = _check_dataset(dataset, image_shape, name)
    param_names, shapes, stddevs = map(tuple, zip(*layout))
    return ClassifierProblem(name, mode, param_names, shapes, stddevs,
                             logits_fn=logits_fn, images=tf.constant(images), labels=tf.constant(labels),
                             data_source=source)
