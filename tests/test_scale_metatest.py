"""`python -m l2o_scale.metatest` end to end on tiny budgets (embedded MNIST sample), and its test problems."""
import json
import os
import pickle

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_module
from l2o_scale import checkpoint
from l2o_scale import eval_problems
from l2o_scale import hierarchical_rnn
from l2o_tf import datasets
from l2o_tf import meta
from l2o_tf import models
from l2o_tf import seeding


@pytest.fixture
def env(new_user_env):
    return new_user_env


def metatest(env, *flags, check_only=False):
    return run_module("l2o_scale.metatest", env, *flags, report_tensorflow=check_only)


@pytest.fixture
def saved_optimizer(tmp_path):
    """A fresh-weights optimizer saved in the original's layout: <train_dir>/HierarchicalRNN_GRUCell_20_2/."""
    opt = hierarchical_rnn.HierarchicalRNN(seed=21)
    logdir = tmp_path / "train" / checkpoint.LOGDIR_NAME
    checkpoint.save(opt, logdir / "model.ckpt-0")
    checkpoint.save(opt, logdir / "model.ckpt-7")  # the latest, so --restore_model_name must pick ckpt-0
    return tmp_path / "train", logdir / "model.ckpt-0"


def test_l2o_records_per_seed_match_an_in_process_run(env, tmp_path, saved_optimizer, monkeypatch):
    train_dir, prefix = saved_optimizer
    out = tmp_path / "eval"
    code, output = metatest(env, f"--train_dir={train_dir}", "--restore_model_name=model.ckpt-0",
                            "--include_mnist_mlp_problems", "--num_testing_itrs=25", "--seeds=6,12",
                            f"--save_dir={out}", "--model_name=tiny")
    assert code == 0, output
    assert "embedded MNIST sample" in output and "ETA" in output
    records = {}
    for seed in (6, 12):
        path = out / f"seed{seed}_eval_loss_record.pickle-tiny"
        with open(path, "rb") as f:
            losses = pickle.load(f)
        assert isinstance(losses, list) and len(losses) == 25 and all(isinstance(v, float) for v in losses)
        with np.load(str(path) + ".npz") as npz:
            np.testing.assert_array_equal(npz["losses"], np.float32(losses))
            run_flags = json.loads(str(npz["flags"]))
        assert run_flags["seed"] == seed and run_flags["checkpoint"] == str(prefix)
        records[seed] = np.array(losses)
    assert not np.allclose(records[6], records[12])
    # the same run in-process: the seed fixes the optimizee, the minibatches and the initial learning rates
    for name in ("L2O_DATA_DIR", "TFDS_DATA_DIR"):
        monkeypatch.setenv(name, env["TFDS_DATA_DIR"]) if name in env else monkeypatch.delenv(name, raising=False)
    sample = datasets.load("mnist", "test")  # the embedded sample, as in the subprocess
    assert "sample" in sample.source
    problem = eval_problems.get("mnist_mlp", dataset=(sample.images, sample.labels))
    opt = checkpoint.load(prefix)
    opt.reseed(12)
    generator = seeding.generator(12)  # as metatest seeds its runs
    params, state, _, scale = meta.new_trajectory(problem, opt, generator)
    losses = []
    for _ in range(25):  # meta.Runner's loop, eagerly: step on one minibatch, record on a fresh one
        _, gradients = meta.loss_and_gradient(problem, params, (), scale, generator)
        deltas, state = opt.step(gradients, state)
        params = meta.add(params, deltas)
        losses.append(float(problem.loss(meta.scaled(params, scale), (), generator)))
    np.testing.assert_allclose(losses, records[12], rtol=1e-4)
    assert np.mean(losses[-5:]) < np.log(10.0) + 0.05  # finite and sane (the MLP starts at ln 10)


def test_baseline_and_several_groups(env, tmp_path):
    out = tmp_path / "adam"
    code, output = metatest(env, "--test_optimizer=adam", "--include_mnist_mlp_relu_problems",
                            "--include_mnist_mlp_deeper_problems", "--num_testing_itrs=10", "--seeds=6",
                            f"--save_dir={out}", "--model_name=m")
    assert code == 0, output
    for group in ("mnist_mlp_relu", "mnist_mlp_deeper"):  # kept apart instead of overwriting each other
        with open(out / f"seed6_eval_loss_record.pickle-m-{group}", "rb") as f:
            assert len(pickle.load(f)) == 10


def test_the_shipped_checkpoint_by_its_name(env, tmp_path):
    code, output = metatest(env, "--train_dir=scale_smoke", "--include_mnist_mlp_problems", "--num_testing_itrs=3",
                            "--seeds=6", f"--save_dir={tmp_path}", "--model_name=smoke")
    assert code == 0, output
    with np.load(tmp_path / "seed6_eval_loss_record.pickle-smoke.npz") as npz:
        shipped = os.path.join(models.shipped_path("scale_smoke"), "model.ckpt-0")
        assert json.loads(str(npz["flags"]))["checkpoint"] == shipped
        assert npz["losses"].shape == (3,) and np.all(np.isfinite(npz["losses"]))


@pytest.mark.parametrize("flags, message", [
    (["--test_optimizer=rmsprop", "--include_mnist_mlp_problems"], "unknown --test_optimizer"),
    (["--test_optimizer=sgd"], "no test problem selected"),
    (["--include_mnist_mlp_problems", "--num_testing_itrs=0"], "--num_testing_itrs must be positive"),
    (["--include_mnist_mlp_problems", "--seeds=6,x"], "--seeds must be comma-separated integers"),
    (["--include_mnist_mlp_problems", "--train_dir={tmp}"], "no checkpoint"),
    (["--include_mnist_mlp_problems", "--train_dir={tmp}/none/model.ckpt-0"], "no such checkpoint"),
    (["--include_mnist_mlp_problems", "--train_dir=scale_smok"], "shipped checkpoints: scale_smoke"),
    (["--include_mnist_mlp_problems", "--train_dir={tmp}", "--restore_model_name=model.ckpt-3"],
     "no such checkpoint"),
    (["--include_mnist_mlp_problems", "--test_optimizer=adam", "--min_lr=1e-5"], "only apply to"),
    (["--include_cifar10_conv_problems", "--test_optimizer=adam", "--data_dir={tmp}"], "cifar10"),
])
def test_bad_flags_fail_before_tensorflow(env, tmp_path, flags, message):
    code, output = metatest(env, *[f.format(tmp=tmp_path) for f in flags], check_only=True)
    assert code == 2, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], output
    assert "Traceback" not in output and "tensorflow imported: False" in output


def test_help_lists_the_flags(env):
    code, output = metatest(env, "--help")
    output = output.replace("--[no]", "--")
    for flag in ("--train_dir", "--restore_model_name", "--save_dir", "--model_name", "--num_testing_itrs",
                 "--test_optimizer", "--include_mnist_mlp_problems", "--include_mnist_mlp_relu_problems",
                 "--include_mnist_mlp_deeper_problems", "--include_mnist_conv_problems",
                 "--include_mnist_conv_orig_problems", "--include_cifar10_conv_problems", "--seeds", "--data_dir"):
        assert flag in output, flag


# -- the test problems (SPEC_SCALE §5.3's evaluation table) ---------------------------------------------------

@pytest.mark.parametrize("group, num_params, image_shape, batch", [
    ("mnist_mlp", 15910, (28, 28, 1), 128), ("mnist_mlp_relu", 15910, (28, 28, 1), 128),
    ("mnist_mlp_deeper", 16330, (28, 28, 1), 128), ("mnist_conv", 18122, (28, 28, 1), 128),
    ("mnist_conv_orig", 64402, (28, 28, 1), 64), ("cifar10_conv", 13610, (32, 32, 3), 128)])
def test_problem_sizes_and_batches(group, num_params, image_shape, batch):
    rng = np.random.default_rng(0)
    data = (rng.uniform(size=(200,) + image_shape).astype(np.float32), rng.integers(0, 10, 200).astype(np.int32))
    problem = eval_problems.get(group, dataset=data)
    assert problem.num_params == num_params and problem.mode == "test"
    generator = tf.random.Generator.from_seed(0)
    params = problem.init_params(generator)
    assert all(abs(float(tf.math.reduce_std(p)) - 0.01) < 0.005 for p in params if p.shape.num_elements() > 100)
    images, labels = problem.sample_batch(generator)
    assert images.shape[0] == batch
    loss = float(problem.loss(params, (), generator))
    assert abs(loss - np.log(10.0)) < 0.05  # tiny weights: near-uniform predictions


def test_eval_convnet_against_numpy():
    """The eval ConvNet (stride 2, CIFAR shapes): VALID conv + bias, x 1/sqrt(1.001), ReLU, 2x2 max-pool, twice;
    dense; ReLU on the logits."""
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(3, 32, 32, 3)).astype(np.float32)
    params = [rng.normal(0, 0.3, size=s).astype(np.float32)
              for s in [(3, 3, 3, 16), (16,), (5, 5, 16, 32), (32,), (32, 10), (10,)]]

    def conv_valid(x, w, stride):
        kh, kw = w.shape[:2]
        out_h, out_w = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
        out = np.zeros((x.shape[0], out_h, out_w, w.shape[3]))
        for i in range(out_h):
            for j in range(out_w):
                patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
                out[:, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [0, 1, 2]))
        return out

    def pool(x):
        h, w = x.shape[1] // 2, x.shape[2] // 2
        return x[:, :2 * h, :2 * w].reshape(x.shape[0], h, 2, w, 2, -1).max(axis=(2, 4))

    x = images.astype(np.float64)
    for w, b in (params[0:2], params[2:4]):
        x = pool(np.maximum((conv_valid(x, w, 2) + b) / np.sqrt(1.001), 0))
    expected = np.maximum(x.reshape(3, -1) @ params[4] + params[5], 0)
    problem = eval_problems.get("cifar10_conv", dataset=(images, np.zeros(3, np.int32)))
    np.testing.assert_allclose(problem.logits_fn(params, images), expected, rtol=1e-4, atol=1e-5)
