"""Tests for l2o_tf.problems on small synthetic datasets (no real MNIST/CIFAR needed)."""
import math

import numpy as np
import pytest
import tensorflow as tf

from l2o_tf import names
from l2o_tf import problems

EXPECTED_COUNTS = {
    "quadratic": 1280, "mnist": 15910, "mnist_relu": 15910, "mnist_deeper": 16330,
    "mnist_conv": 18122, "cifar_conv": 13610, "lenet": 62232, "nas": 7578,
}
CLASSIFIERS = [n for n in names.PROBLEM_DATASETS if n != "quadratic"]


def _random_dataset(shape, n=256, seed=0):
    rs = np.random.RandomState(seed)
    return rs.rand(n, *shape).astype(np.float32), rs.randint(0, 10, n)


def _learnable_dataset(shape, n=256, seed=0):
    """Noise plus a bright class-specific block of rows, so the labels can be learned from the images."""
    rs = np.random.RandomState(seed)
    labels = rs.randint(0, 10, n)
    images = 0.5 * rs.rand(n, *shape).astype(np.float32)
    rows = shape[0] // 10
    for k in range(n):
        images[k, labels[k] * rows:(labels[k] + 1) * rows] += 0.5
    return images, labels


MNIST_DATA = _random_dataset((28, 28, 1))
CIFAR_DATA = _random_dataset((32, 32, 3))


def _get(name, dataset=None):
    if name == "quadratic":
        return problems.get(name)
    if dataset is None:
        dataset = MNIST_DATA if name.startswith("mnist") else CIFAR_DATA
    return problems.get(name, dataset=dataset)


@pytest.fixture(scope="module")
def built():
    return {name: _get(name) for name in names.PROBLEM_DATASETS}


def test_problem_list():
    assert set(names.PROBLEM_DATASETS) == set(EXPECTED_COUNTS)


@pytest.mark.parametrize("name", list(EXPECTED_COUNTS))
def test_param_counts(built, name):
    p = built[name]
    assert p.num_params == EXPECTED_COUNTS[name]
    assert p.num_params == sum(math.prod(s) for s in p.param_shapes)
    assert len(p.param_names) == len(p.param_shapes) == len(set(p.param_names))
    params = p.init_params(tf.random.Generator.from_seed(0))
    assert [tuple(t.shape) for t in params] == list(p.param_shapes)
    assert all(t.dtype == tf.float32 for t in params)


def test_mnist_layout(built):
    p = built["mnist"]
    assert p.param_names == ("mlp/linear_0/w", "mlp/linear_0/b", "mlp/linear_1/w", "mlp/linear_1/b")
    assert p.param_shapes == ((784, 20), (20,), (20, 10), (10,))
    assert built["mnist_deeper"].param_shapes == ((784, 20), (20,), (20, 20), (20,), (20, 10), (10,))


def test_lenet_layout(built):
    p = built["lenet"]
    assert p.param_names[:3] == ("conv_net_2d/conv_2d_0/w", "conv_net_2d/conv_2d_0/b", "conv_net_2d/batch_norm_0/beta")
    assert p.param_shapes == ((5, 5, 3, 6), (6,), (6,), (5, 5, 6, 16), (16,), (16,),
                              (400, 120), (120,), (120,), (120, 84), (84,), (84,), (84, 10), (10,))


@pytest.mark.parametrize("name", ["quadratic", "mnist_deeper", "lenet", "nas"])
def test_flatten_round_trip(built, name):
    p = built[name]
    params = p.init_params(tf.random.Generator.from_seed(3))
    flat = p.flatten(params)
    assert flat.shape == (p.num_params,)
    # row-major concatenation in parameter order
    np.testing.assert_array_equal(flat.numpy(), np.concatenate([t.numpy().ravel() for t in params]))
    for a, b in zip(p.unflatten(flat), params):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(p.flatten(p.unflatten(flat)).numpy(), flat.numpy())


def pooled_init(problem, draws=40):
    """Each parameter's initial values over `draws` seeds, concatenated: enough samples to see a wrong scale.

    `Generator.from_seed(s)` starts Philox's counter at s, so nearby seeds give overlapping streams: the seeds are
    spaced far beyond what one initialisation draws."""
    draws = [problem.init_params(tf.random.Generator.from_seed(seed * 10 ** 7)) for seed in range(draws)]
    return {name: np.concatenate([d[i].numpy().ravel() for d in draws]) for i, name in enumerate(problem.param_names)}


def assert_normal_std(values, std, name):
    """Mean 0 and standard deviation `std` within 5 standard errors (a 12% error, as a normal truncated at 2 sigma
    would make, shows from about 900 samples)."""
    n = values.size
    assert abs(values.mean()) < 5 * std / np.sqrt(n), name
    assert abs(values.std() / std - 1) < 5 / np.sqrt(2 * n), (name, values.std(), n)


def test_init_statistics(built):
    mnist = pooled_init(built["mnist"])
    for name, values in mnist.items():  # weights and biases alike: N(0, 0.01), not truncated
        assert_normal_std(values, 0.01, name)
    tail = np.mean(np.abs(mnist["mlp/linear_0/w"]) > 0.02)
    assert abs(tail - 0.0455) < 0.002  # P(|x| > 2 sigma) of a normal; a 2-sigma truncated normal has none
    biases = np.concatenate([mnist["mlp/linear_0/b"], mnist["mlp/linear_1/b"]])
    assert biases.size == 1200
    assert_normal_std(biases, 0.01, "mlp biases")

    for name, values in pooled_init(built["mnist_conv"]).items():
        if name.endswith("biases1") or name == "fc_bias":
            assert np.all(values == 0), name
        else:
            assert_normal_std(values, 0.01, name)

    lenet = pooled_init(built["lenet"], draws=4)
    for name, values in lenet.items():
        if "batch_norm" in name:
            assert np.all(values == 0), name  # BN offset beta starts at 0
        else:
            assert_normal_std(values, 0.01, name)


def test_same_seed_same_init(built):
    for name in ["quadratic", "lenet"]:
        p = built[name]
        a = p.init_flat(tf.random.Generator.from_seed(7)).numpy()
        b = p.init_flat(tf.random.Generator.from_seed(7)).numpy()
        c = p.init_flat(tf.random.Generator.from_seed(8)).numpy()
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


@pytest.mark.parametrize("name", list(EXPECTED_COUNTS))
def test_loss_at_init(built, name):
    p = built[name]
    rng = tf.random.Generator.from_seed(1)
    constants = p.init_constants(rng)
    loss = float(p.flat_loss(p.init_flat(rng), constants, rng))
    assert np.isfinite(loss)
    if name != "quadratic":
        assert abs(loss - math.log(10)) < 0.05


def _numpy_mlp_loss(params, images, labels):
    w0, b0, w1, b1 = [np.float64(t.numpy()) for t in params]
    hidden = 1.0 / (1.0 + np.exp(-(images.reshape(len(images), -1) @ w0 + b0)))
    logits = hidden @ w1 + b1
    logits = logits - logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels].mean()


def test_mnist_loss_matches_numpy(built):
    p = built["mnist"]
    # larger weights than the init so the hidden layer matters
    params = [3.0 * t for t in p.init_params(tf.random.Generator.from_seed(2))]
    images, labels = MNIST_DATA[0][:128], MNIST_DATA[1][:128]
    tf_loss = float(p.batch_loss(params, tf.constant(images), tf.constant(labels, tf.int32)))
    np.testing.assert_allclose(tf_loss, _numpy_mlp_loss(params, images, labels), rtol=0, atol=1e-5)
    assert abs(tf_loss - math.log(10)) > 1e-3   # not a trivially uniform prediction


def test_loss_uses_gathered_batch(built):
    """loss(rng) must equal batch_loss on the batch that sample_batch draws from an identical generator."""
    p = built["mnist"]
    params = p.init_params(tf.random.Generator.from_seed(2))
    images, labels = p.sample_batch(tf.random.Generator.from_seed(5))
    assert images.shape == (128, 28, 28, 1) and labels.shape == (128,)
    idx = tf.random.Generator.from_seed(5).uniform([128], 0, 256, dtype=tf.int64).numpy()
    np.testing.assert_array_equal(images.numpy(), MNIST_DATA[0][idx])
    np.testing.assert_array_equal(labels.numpy(), MNIST_DATA[1][idx])
    np.testing.assert_allclose(float(p.loss(params, (), tf.random.Generator.from_seed(5))),
                               _numpy_mlp_loss(params, images.numpy(), labels.numpy()), atol=1e-5)


def test_conv_bias_before_bn_is_dead(built):
    p = built["mnist_conv"]
    params = p.init_params(tf.random.Generator.from_seed(4))
    images, labels = p.sample_batch(tf.random.Generator.from_seed(4))
    shifted = list(params)
    shifted[1] = shifted[1] + 0.5
    base = float(p.batch_loss(params, images, labels))
    assert abs(float(p.batch_loss(shifted, images, labels)) - base) < 1e-5
    # whereas the FC bias is live
    shifted[5] = shifted[5] + tf.constant([1.0] + [0.0] * 9)
    assert abs(float(p.batch_loss(shifted, images, labels)) - base) > 1e-2


def test_batch_norm_uses_batch_statistics_per_channel():
    x = (np.random.RandomState(0).randn(8, 5, 5, 3) * [1.0, 3.0, 0.02] + 2.0).astype(np.float32)
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))   # biased variance
    offset = np.float32([0.0, 0.5, -1.0])
    expected = (x - mean) / np.sqrt(var + 1e-3) + offset
    np.testing.assert_allclose(problems._batch_norm(tf.constant(x), tf.constant(offset)).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(problems._batch_norm(tf.constant(x[:, 0, 0])).numpy(),
                               (x[:, 0, 0] - x[:, 0, 0].mean(0)) / np.sqrt(x[:, 0, 0].var(0) + 1e-3), atol=1e-5)


def test_layers_batch_norm_is_the_fused_kernel_of_the_same_function():
    """The conv problems' BN (the fused kernel, as TF1's tf.layers ran it): the batch-statistics formula forward, and
    backward the gradient through the statistics, dx = (dy - mean(dy) - x̂ mean(dy x̂)) / sqrt(var + eps)."""
    rng = np.random.RandomState(1)
    x = (rng.randn(8, 5, 5, 3) * [1.0, 3.0, 0.02] + 2.0).astype(np.float32)
    upstream = rng.randn(*x.shape).astype(np.float32)
    axes = (0, 1, 2)
    inv_std = 1.0 / np.sqrt(x.var(axis=axes) + 1e-3)
    normalised = (x - x.mean(axis=axes)) * inv_std
    expected_dx = inv_std * (upstream - upstream.mean(axis=axes) - normalised * (upstream * normalised).mean(axis=axes))
    tensor = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        y = problems._layers_batch_norm(tensor)
        weighted = tf.reduce_sum(y * upstream)
    np.testing.assert_allclose(y.numpy(), normalised, atol=1e-5)
    np.testing.assert_allclose(tape.gradient(weighted, tensor).numpy(), expected_dx, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name, fused", [("mnist_conv", 2), ("cifar_conv", 2), ("nas", 4), ("lenet", 0)])
def test_conv_problems_run_the_fused_batch_norm(built, name, fused):
    """tf.layers BN (mnist_conv, cifar_conv, nas) is one fused kernel per conv layer; Sonnet BN (lenet) is not."""
    p = built[name]
    params = p.init_params(tf.random.Generator.from_seed(0))
    images, labels = p.sample_batch(tf.random.Generator.from_seed(1))
    graph = tf.function(p.batch_loss).get_concrete_function(params, images, labels).graph
    assert sum(op.type.startswith("FusedBatchNorm") for op in graph.get_operations()) == fused


@pytest.mark.parametrize("name", ["mnist_conv", "cifar_conv", "nas"])
def test_relu_on_logits(built, name):
    p = built[name]
    params = [3.0 * t for t in p.init_params(tf.random.Generator.from_seed(0))]
    logits = p.logits_fn(params, p.sample_batch(tf.random.Generator.from_seed(0))[0]).numpy()
    assert logits.shape == (128, 10) and logits.min() == 0.0 and logits.max() > 0.0


def test_quadratic_matches_numpy(built):
    p = built["quadratic"]
    rng = tf.random.Generator.from_seed(6)
    w, y = p.init_constants(rng)
    assert w.shape == (128, 10, 10) and y.shape == (128, 10)
    assert 0 <= w.numpy().min() and w.numpy().max() < 1
    x = rng.normal([128, 10])
    expected = np.mean(np.sum((np.einsum("bij,bj->bi", w.numpy(), x.numpy()) - y.numpy()) ** 2, axis=1))
    np.testing.assert_allclose(float(p.loss([x], (w, y), rng)), expected, rtol=1e-5)


def _gd_losses(p, steps, lr, seed=0):
    rng = tf.random.Generator.from_seed(seed)
    constants = p.init_constants(rng)

    @tf.function
    def run(flat):
        losses = tf.TensorArray(tf.float32, size=steps)
        for t in tf.range(steps):
            with tf.GradientTape() as tape:
                tape.watch(flat)
                loss = p.flat_loss(flat, constants, rng)
            flat = flat - lr * tape.gradient(loss, flat)
            losses = losses.write(t, loss)
        return losses.stack()

    return run(p.init_flat(rng)).numpy()


def test_gradient_descent_decreases_quadratic(built):
    losses = _gd_losses(built["quadratic"], steps=30, lr=1.0)
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.25 * losses[0]


def test_gradient_descent_decreases_mnist():
    p = problems.get("mnist", dataset=_learnable_dataset((28, 28, 1)))
    losses = _gd_losses(p, steps=50, lr=1.0)
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3


def test_fresh_but_reproducible_minibatches(built):
    p = built["mnist"]
    params = p.init_params(tf.random.Generator.from_seed(0))
    params = [10.0 * t for t in params]   # make the loss depend visibly on the batch

    def two_losses(seed):
        rng = tf.random.Generator.from_seed(seed)
        return float(p.loss(params, (), rng)), float(p.loss(params, (), rng))

    first, second = two_losses(9)
    assert first != second
    assert two_losses(9) == (first, second)


def test_flat_gradient_in_graph(built):
    p = built["lenet"]
    rng = tf.random.Generator.from_seed(0)

    @tf.function
    def grad(flat):
        with tf.GradientTape() as tape:
            tape.watch(flat)
            loss = p.flat_loss(flat, (), rng)
        return tape.gradient(loss, flat)

    g = grad(p.init_flat(rng)).numpy()
    assert g.shape == (62232,) and np.all(np.isfinite(g))
    betas = [k for k, n in enumerate(p.param_names) if n.endswith("beta")]
    assert all(np.any(part != 0) for k, part in enumerate(p.unflatten(tf.constant(g))) if k in betas)


def test_unknown_name_and_mode():
    with pytest.raises(ValueError, match="valid names: quadratic, mnist"):
        problems.get("nope")
    with pytest.raises(ValueError, match="mode"):
        problems.get("mnist", mode="valid", dataset=MNIST_DATA)


@pytest.mark.parametrize("name, dataset", [
    ("mnist", CIFAR_DATA),
    ("cifar_conv", MNIST_DATA),
    ("mnist", (MNIST_DATA[0][:, :, :, 0], MNIST_DATA[1])),
    ("mnist", (MNIST_DATA[0], MNIST_DATA[1][:10])),
    ("mnist", (MNIST_DATA[0], MNIST_DATA[1] + 10)),
    ("lenet", (np.uint8(255 * CIFAR_DATA[0]), CIFAR_DATA[1])),
    ("quadratic", MNIST_DATA),
])
def test_bad_dataset(name, dataset):
    with pytest.raises(ValueError):
        problems.get(name, dataset=dataset)


def test_only_the_conv_problems_are_convolutional():
    """Runners compile with XLA exactly for the problems without convolutions."""
    convolutional = {name for name in names.PROBLEM_DATASETS if _get(name).is_convolutional}
    assert convolutional == set(names.CONVOLUTIONAL_PROBLEMS) == {"mnist_conv", "cifar_conv", "lenet", "nas"}
