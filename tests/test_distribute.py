"""Meta-training over several optimizees per meta-step and with tf.distribute (l2o_tf/distribute.py).

References: each optimizee's meta-gradient computed alone by a plain one-device `meta.Trainer` on the same draws
(its own generator, re-created from the seed), averaged in numpy, and meta-Adam's first step written out in numpy.
Two logical CPU devices (mirrored) must be set up before TensorFlow initialises its devices, so that scenario runs
this file as a script in a fresh process (`python tests/test_distribute.py mirrored OUT`); two local workers
(multi-worker) are two `train_dm` processes. The test process itself only uses the default strategy.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import free_ports, mnist_on_random_images
from l2o_tf import config as config_lib
from l2o_tf import distribute
from l2o_tf import errors
from l2o_tf import meta
from l2o_tf import networks
from l2o_tf import problems
from l2o_tf import rules
from l2o_tf import seeding
from l2o_tf import training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LR = 1e-3


def config(**overrides):
    values = dict(problem="mnist", num_epochs=1, num_steps=5, unroll_length=5, evaluation_period=100,
                  evaluation_epochs=1, seed=3, learning_rate=LR)
    return config_lib.TrainConfig(**{**values, **overrides})


def tiny_mnist():
    """mnist on 64 random images, built in this process (the scenarios also run as child processes)."""
    return mnist_on_random_images(64, seed=0)


def weights(cell):
    return [v.numpy().copy() for v in cell.weights]


def reference_meta_gradients(run, count):
    """Optimizee k alone on one device: its draws from a fresh generator "train" / "train/k" of the run's seed, a
    `meta.Trainer` on a copy of the run's cell; returns [(meta_loss, final_loss, gradients)] for k < count."""
    cell = networks.for_problem(run.config.net, run.problem.name)
    cell.build()
    for mine, theirs in zip(cell.weights, run.cell.weights):
        mine.assign(theirs.numpy())
    results = []
    for k in range(count):
        rng = seeding.generator(run.seed, "train" if k == 0 else f"train/{k}")
        trainer = meta.Trainer(run.problem, cell, rng, LR, run.config.unroll_length)
        trajectory = trainer.new_trajectory()
        with tf.GradientTape() as tape:
            meta_loss, final_loss, _, _, objective = trainer._forward(trajectory, tape)
        results.append((float(meta_loss), float(final_loss), [g.numpy() for g in tape.gradient(objective,
                                                                                                 trainer.variables)]))
    return results


def adam_first_step(gradient):
    """Keras Adam's first update (beta 0.9 / 0.999, epsilon 1e-8) of a weight with gradient `gradient`."""
    m, v = 0.1 * gradient, 0.001 * gradient ** 2
    alpha = LR * np.sqrt(1 - 0.999) / (1 - 0.9)
    return -alpha * m / (np.sqrt(v) + 1e-8)


def check_first_meta_step_is_the_mean(run, count):
    """Run one epoch of one unroll; the weights must have moved by Adam's step on the mean of the `count`
    optimizees' separately computed meta-gradients, and the record must hold their mean losses."""
    before = weights(run.cell)
    references = reference_meta_gradients(run, count)
    record = run.train_epoch()
    assert record["applied"] == 1
    assert record["meta_loss"] == pytest.approx(np.mean([r[0] for r in references]), rel=1e-5)
    assert record["loss"] == pytest.approx(np.mean([r[1] for r in references]), rel=1e-5)
    mean = [np.mean(gs, axis=0) for gs in zip(*[r[2] for r in references])]
    signs_differ = False
    for old, new, g, g0 in zip(before, weights(run.cell), mean, references[0][2]):
        change, large = new - old, np.abs(g) > 1e-3 * np.max(np.abs(g))
        np.testing.assert_allclose(change[large], adam_first_step(g[large]), rtol=1e-3)
        assert np.all(np.abs(change) <= LR * (1 + 1e-4))
        signs_differ |= bool(np.any(np.sign(g[large]) != np.sign(g0[large])))
    assert signs_differ  # the mean is not optimizee 0's gradient: the other optimizee counted


# -- one device ------------------------------------------------------------------------------------------------------

def test_one_optimizee_on_the_default_strategy_is_the_plain_trainer_exactly():
    """The parallel trainer with one optimizee and one replica computes today's meta-step bit for bit (and the
    default run does not even use it)."""
    problem = problems.get("quadratic")
    assert type(training.MetaTraining(config(problem="quadratic"), problem).trainer) is meta.Trainer
    results = []
    for parallel in (False, True):
        cell = networks.for_problem("dm", "quadratic", seed=4)
        trainer = meta.Trainer(problem, cell, seeding.generator(1, "train"), LR, 5)
        if parallel:
            trainer = distribute.ParallelTrainer(tf.distribute.get_strategy(), trainer, [trainer.rng], [cell])
        trajectory = trainer.new_trajectory()
        outputs = [trainer.train_unroll(trajectory)[1:] for _ in range(2)]
        trajectory = trainer.train_unroll(trajectory)[0]
        params = (trajectory[0] if parallel else trajectory).params
        results.append((outputs, rules.flatten(params).numpy(), weights(cell)))
    (outputs, params, cell_weights), (p_outputs, p_params, p_weights) = results
    assert outputs == p_outputs
    np.testing.assert_array_equal(params, p_params)
    for a, b in zip(cell_weights, p_weights):
        np.testing.assert_array_equal(a, b)


def test_num_optimizees_applies_the_mean_of_separate_meta_gradients():
    run = training.MetaTraining(config(num_optimizees=2), tiny_mnist())
    assert run.num_optimizees == 2 and isinstance(run.trainer, distribute.ParallelTrainer)
    check_first_meta_step_is_the_mean(run, 2)


def test_a_nan_in_one_optimizee_skips_the_update():
    run = training.MetaTraining(config(problem="quadratic", num_optimizees=2), problems.get("quadratic"))
    check_nan_skips(run)


def check_nan_skips(run):
    """Poison the last optimizee (on the last replica): nothing is applied, on any replica; then a clean step is."""
    trainer, strategy = run.trainer, run.strategy
    trajectories = trainer.new_trajectory()
    before, slots = weights(run.cell), [v.numpy().copy() for v in trainer.optimizer.variables]

    def poison(context):
        replica = context.replica_id_in_sync_group
        local = tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[replica], trajectories)
        if replica < strategy.num_replicas_in_sync - 1:
            return local
        x = rules.flatten(local[-1].params).numpy()
        x[7] = np.nan
        return local[:-1] + [local[-1]._replace(params=run.problem.unflatten(tf.constant(x)))]

    poisoned = strategy.experimental_distribute_values_from_function(poison)
    _, meta_loss, _, applied = trainer.train_unroll(poisoned)
    assert applied is False and np.isnan(meta_loss)
    for old, new in zip(before, weights(run.cell)):
        np.testing.assert_array_equal(new, old)
    for old, new in zip(slots, trainer.optimizer.variables):
        np.testing.assert_array_equal(new.numpy(), old)
    for variable in run.cell.weights:  # every replica's copy
        for copy in strategy.experimental_local_results(variable.value):
            np.testing.assert_array_equal(copy.numpy(), variable.numpy())
    assert trainer.train_unroll(trajectories)[3] is True


def test_resume_with_several_optimizees_continues_every_stream(tmp_path):
    """Interrupted (2 epochs, checkpointed) and resumed (2 more) = 4 uninterrupted epochs, exactly: optimizee 1's
    generator is in the checkpoint; resuming with another count is refused."""
    problem = problems.get("quadratic")
    kwargs = dict(problem="quadratic", num_optimizees=2, num_steps=10)
    whole = training.MetaTraining(config(num_epochs=4, save_path=str(tmp_path / "whole"), **kwargs), problem)
    whole.run()
    training.MetaTraining(config(num_epochs=2, save_path=str(tmp_path / "cut"), **kwargs), problem).run()
    resumed = training.MetaTraining(config(num_epochs=4, save_path=str(tmp_path / "cut"), **kwargs), problem)
    assert resumed.resumed and resumed.epoch == 2
    resumed.run()
    assert resumed.history[1:] == whole.history[1:]
    for a, b in zip(weights(resumed.cell), weights(whole.cell)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(errors.UsageError, match="2 optimizees per meta-step, 1 now"):
        training.MetaTraining(config(**{**kwargs, "num_optimizees": 1}, num_epochs=6,
                                     save_path=str(tmp_path / "cut")), problem)


def test_bad_strategy_settings_are_usage_errors(monkeypatch):
    for overrides, message in [(dict(strategy="tpu"), "unknown --strategy='tpu'"),
                               (dict(num_optimizees=0), "--num_optimizees must be a positive integer")]:
        with pytest.raises(errors.UsageError, match=message):
            config(**overrides).validate()
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(errors.UsageError, match=r"needs \$TF_CONFIG"):
        distribute.strategy_named("multi_worker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}}')
    with pytest.raises(errors.UsageError, match="not a valid cluster description"):
        distribute.strategy_named("multi_worker")


# -- two replicas on two logical CPUs, and two worker processes -------------------------------------------------------

def run_script(*args):
    """This file as a script in a fresh process; returns its output."""
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, os.path.abspath(__file__), *args], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300).stdout


def scenario_mirrored(out):
    """Two replicas: the first meta-step against the references, the NaN skip, a wrong count, and a short run
    of RNNprop (random scaling, the self-improving mixture, validation) against the same run with two optimizees on
    one device."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    run = training.MetaTraining(config(strategy="mirrored"), tiny_mnist())
    assert run.strategy.num_replicas_in_sync == 2 and run.num_optimizees == 2
    assert [g.state.device[-5:] for g in run.optimizee_rngs["train"]] == ["CPU:0", "CPU:1"]
    check_first_meta_step_is_the_mean(run, 2)
    for variable in run.cell.weights:
        copies = run.strategy.experimental_local_results(variable.value)
        assert len(copies) == 2 and sorted(c.device[-5:] for c in copies) == ["CPU:0", "CPU:1"]
        np.testing.assert_array_equal(copies[0].numpy(), copies[1].numpy())
    check_nan_skips(training.MetaTraining(config(problem="quadratic", strategy="mirrored"),
                                          problems.get("quadratic")))
    with pytest.raises(errors.UsageError, match="--num_optimizees=3 must be a multiple of the 2 replicas"):
        training.MetaTraining(config(strategy="mirrored", num_optimizees=3), problems.get("quadratic"))
    outside = networks.for_problem("dm", "quadratic")
    outside.build()
    with pytest.raises(errors.UsageError, match="made outside the strategy's scope"):
        training.MetaTraining(config(problem="quadratic", strategy="mirrored"), problems.get("quadratic"), outside)
    histories = {}
    for strategy in ("mirrored", "default"):
        short = config(net="rnnprop", problem="quadratic", strategy=strategy, num_optimizees=2, num_epochs=3,
                       num_steps=10, evaluation_period=3, self_improving=True, if_scale=True)
        short_run = training.MetaTraining(short, problems.get("quadratic"))
        histories[strategy] = short_run.run()[1:]
        assert short_run.trainer._train_unroll.experimental_get_tracing_count() == 1  # one graph for every epoch
    with open(out, "w") as f:
        json.dump(histories, f)


def test_mirrored_two_replicas_average_their_optimizees_meta_gradients(tmp_path):
    output = run_script("mirrored", str(tmp_path / "histories.json"))
    assert os.path.exists(tmp_path / "histories.json"), output
    with open(tmp_path / "histories.json") as f:
        histories = json.load(f)
    assert [h["kind"] for h in histories["default"]] == ["train", "train", "train", "validation"]
    assert_same_history(histories["mirrored"], histories["default"])


def assert_same_history(actual, expected):
    """The same records; losses equal up to the order of floating-point sums."""
    assert [sorted(h) for h in actual] == [sorted(h) for h in expected]
    for a, e in zip(actual, expected):
        for key, value in e.items():
            if isinstance(value, float):
                assert a[key] == pytest.approx(value, rel=1e-5), key
            else:
                assert a[key] == value, key


def worker_config(save_path):
    return config(problem="quadratic", num_optimizees=2, num_epochs=2, num_steps=10, evaluation_period=2,
                  save_path=save_path)


def test_two_workers_train_as_one_and_only_the_chief_writes(tmp_path):
    """`train_dm --strategy=multi_worker` in two local processes (one replica each): the same numbers as two
    optimizees on one device, the same decisions on both, files from the chief only."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    flags = [f"--{name}={value}" for name, value in worker_config(None).as_dict().items()
             if name in ("problem", "num_optimizees", "num_epochs", "num_steps", "unroll_length", "evaluation_period",
                         "evaluation_epochs", "seed", "learning_rate")]
    processes = []
    for i in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        command = [sys.executable, "-m", "l2o_tf.train_dm", "--strategy=multi_worker", *flags,
                   f"--save_path={tmp_path / f'save{i}'}"]
        env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_CONFIG": tf_config}
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True))
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output
    decisions = [[line.split("validation at ")[1] for line in output.splitlines() if "validation at " in line]
                 for output in outputs]
    assert len(decisions[0]) == 1 and decisions[0] == decisions[1]  # the chief's cost and decision on both
    assert "Best optimizer:" in outputs[0] and "Best optimizer:" not in outputs[1]
    assert not os.path.exists(tmp_path / "save1")  # the other worker wrote nothing
    with open(tmp_path / "save0" / "history.json") as f:
        history = json.load(f)[1:]
    one_device = training.MetaTraining(worker_config(str(tmp_path / "one")), problems.get("quadratic"))
    assert_same_history(history, one_device.run()[1:])
    # the chief's checkpoint holds optimizee 1's stream as worker 1 left it (the chief never draws from it itself)
    reader = tf.train.load_checkpoint(str(tmp_path / "save0" / "checkpoints"))
    saved = reader.get_tensor("optimizee_rngs/train.S1/_state_var/.ATTRIBUTES/VARIABLE_VALUE")
    expected = one_device.optimizee_rngs["train"][1].state.numpy()
    assert saved.tolist() == expected.tolist() != seeding.generator(3, "train/1").state.numpy().tolist()
    best = networks.load(str(tmp_path / "save0" / "cw.l2l-0"))
    for mine, theirs in zip(best.weights, one_device.cell.weights):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-6)


def test_a_bad_strategy_flag_is_a_one_line_error(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "l2o_tf.train_dm", "--problem=quadratic", "--num_epochs=1", "--num_steps=5",
               "--unroll_length=5", "--seed=1", f"--save_path={tmp_path}"]
    bad = subprocess.run(command + ["--strategy=tpu"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
        "error: unknown --strategy='tpu': expected one of default, mirrored, multi_worker")


if __name__ == "__main__":
    {"mirrored": scenario_mirrored}[sys.argv[1]](*sys.argv[2:])
