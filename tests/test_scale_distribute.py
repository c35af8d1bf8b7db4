"""L2O-Scale meta-training over several optimizees per meta-update and with tf.distribute (l2o_scale/unroll.py
`ParallelUnroller`, l2o_tf/distribute.py).

References: one optimizee as the one-optimizee code ran it (`Unroller.train_unroll` per unroll); each optimizee's
raw meta-gradient computed alone from copies of its generators, averaged, sanitized and put through TF1 RMSProp's
first step in numpy; two optimizees on one device for the distributed runs. Two logical CPU devices (mirrored) must
be set up before TensorFlow initialises its devices, so that scenario runs this file as a script in a fresh process
(`python tests/test_scale_distribute.py mirrored OUT`); two local workers (multi-worker) are two such processes.
"""
import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import free_ports, mnist_on_random_images, run_module
from l2o_scale import config as scale_config, meta_training, plans
from l2o_tf import distribute
from l2o_tf import errors
from l2o_tf import seeding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LR = 1e-3
STATE_STREAM = meta_training.STATE_STREAM


def config(**overrides):
    """Two unrolls of 3 steps per meta-iteration on subsets of 200 examples; no validation, no files."""
    values = dict(train_dir=None, fix_unroll=True, fix_unroll_length=3, fix_num_steps=6, fix_num_steps_eval=6,
                  num_meta_iterations=2, evaluation_period=100, evaluation_epochs=1, save_period=100,
                  mini_batch_size=200, use_second_derivatives=False, meta_learning_rate=LR, seed=3,
                  jit_compile=False)
    return scale_config.ScaleConfig(**{**values, **overrides})


def tiny_mnist():
    """mnist on 600 random images, built in this process (the mirrored scenario also runs as a child process)."""
    return mnist_on_random_images(600, seed=12)


@pytest.fixture(scope="module")
def mnist():
    return tiny_mnist()


def two_optimizees_config(**overrides):
    """Three meta-iterations of two optimizees: training, imitation (of optimizee 0 alone), training, then a
    validation."""
    return config(**{**dict(num_optimizees=2, num_meta_iterations=3, if_mt=True, mt_ratio=0.4, evaluation_period=3),
                     **overrides})


@pytest.fixture(scope="module")
def two_optimizees(mnist):
    """The run of `two_optimizees_config()` on the default strategy, uninterrupted."""
    run = meta_training.ScaleTraining(two_optimizees_config(), mnist)
    run.run()
    assert [h["kind"] for h in run.history[1:]] == ["train", "imitation[adam]", "train", "validation"]
    assert run.iterations.parallel._train.experimental_get_tracing_count() == 1  # one graph for every unroll
    return run


def weights(run):
    return [v.numpy().copy() for v in run.iterations.variables]


def carried(run):
    """Every optimizee's carried state, flattened, and whether it has one (1.0 or 0.0)."""
    return [t.numpy() for c in run.iterations.carried for t in tf.nest.flatten(c)] + \
        [np.array([float(h.numpy()) for h in run.iterations.has_carried])]


def assert_same_arrays(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_array_equal(a, e)


def assert_same_history(actual, expected, rel=1e-5):
    """The same records; losses equal up to the order of floating-point sums."""
    assert [sorted(h) for h in actual] == [sorted(h) for h in expected]
    for a, e in zip(actual, expected):
        for key, value in e.items():
            assert a[key] == (pytest.approx(value, rel=rel) if isinstance(value, float) else value), key


# -- one device -------------------------------------------------------------------------------------------------------

def one_optimizee_meta_iteration(iterations):
    """A training meta-iteration as the one-optimizee code ran it: the same draws, one `Unroller.train_unroll` (the
    forward, the gradient and the sanitized RMSProp step in one compiled call) per unroll."""
    rng = iterations.rngs["plans"]
    plan = iterations.plan()
    data = plans.iteration_data(rng, plan, iterations.dataset_size, iterations.batch_size,
                                iterations.config.mini_batch_size)
    params = plans.optimizee_init(rng, iterations.problem.param_shapes)
    state, reset = iterations.start_state(0)
    initial = iterations.unroller.initial_objective(params, data.subsets[0])
    for subset, batches in zip(data.subsets, data.batches):
        params, state, _, _ = iterations.unroller.train_unroll(params, state, subset, batches, initial, reset)
        reset = False
    iterations.carry([state])


def test_one_optimizee_on_the_default_strategy_is_the_one_optimizee_run_exactly(mnist):
    """Two meta-iterations: the same meta-parameters, RMSProp slots, carried state and generator, bit for bit."""
    run = meta_training.ScaleTraining(config(num_optimizees=1), mnist)
    reference = meta_training.ScaleTraining(config(), mnist)
    assert run.num_optimizees == reference.num_optimizees == 1
    for _ in range(2):
        assert run.train_epoch()["applied"] == 2
        one_optimizee_meta_iteration(reference.iterations)
    assert_same_arrays(weights(run), weights(reference))
    assert_same_arrays([v.numpy() for v in run.iterations.meta_optimizer.variables],
                       [v.numpy() for v in reference.iterations.meta_optimizer.variables])
    assert_same_arrays(carried(run), carried(reference))
    assert (run.cell.initial_lr_generator.state.numpy().tolist()
            == reference.cell.initial_lr_generator.state.numpy().tolist())
    assert int(run.iterations.meta_optimizer.iterations) == 4
    # one optimizee's checkpoint holds exactly what it did before several were possible
    assert set(run._checkpointed()) == {"weights", "meta_optimizer", "carried_state", "has_carried_state",
                                        "initial_lr_generator"}
    assert distribute.checkpointed_generators(run.optimizee_rngs) == {}


def raw_meta_gradient(iterations, k, np_rng, state_rng, plan):
    """Optimizee k's first unroll alone, from copies of its generators: (meta-objective, objectives, f_0, raw
    meta-gradient with zeros for unconnected meta-parameters)."""
    data = plans.iteration_data(np_rng, plan, iterations.dataset_size, iterations.batch_size,
                                iterations.config.mini_batch_size)
    params = [tf.constant(p) for p in plans.optimizee_init(np_rng, iterations.problem.param_shapes)]
    initial = iterations.unroller.initial_objective(params, data.subsets[0])
    state = tf.nest.map_structure(tf.identity, iterations.carried[k])  # replaced by the fresh one (reset)

    @tf.function  # compiled as the run's unrolls are (eager rounding differs by up to ~1e-5 of a gradient entry)
    def unroll_and_gradient():
        with tf.GradientTape() as tape:
            objective, objectives, _, _ = iterations.unroller.forward(
                params, state, tf.constant(data.subsets[0]), tf.constant(data.batches[0]),
                tf.constant(initial, tf.float32), tf.constant(True), state_rng)
        gradients = tape.gradient(objective, iterations.variables)
        return objective, objectives, [tf.zeros(v.shape) if g is None else g
                                       for g, v in zip(gradients, iterations.variables)]

    objective, objectives, gradients = unroll_and_gradient()
    return float(objective), objectives.numpy(), initial, [g.numpy() for g in gradients]


def first_update_config(**overrides):
    """One meta-iteration of one unroll (one meta-update) of two optimizees."""
    return config(num_optimizees=2, num_meta_iterations=1, fix_num_steps=3, **overrides)


@pytest.fixture(scope="module")
def first_update(mnist):
    """The run of `first_update_config()` on the default strategy after its meta-iteration: (run, its record, the
    meta-parameters before, each optimizee's `raw_meta_gradient` from copies of its generators)."""
    run = meta_training.ScaleTraining(first_update_config(), mnist)
    iterations = run.iterations
    np_rngs = [copy.deepcopy(rng) for rng in iterations.data_rngs]
    state_rngs = [tf.random.Generator.from_state(g.state.numpy(), g.algorithm) for g in iterations.state_rngs]
    before = weights(run)
    plan = plans.unroll_plan(np_rngs[0], iterations.settings)
    references = [raw_meta_gradient(iterations, k, np_rngs[k], state_rngs[k], plan) for k in range(2)]
    return run, run.train_epoch(), before, references


def test_two_optimizees_apply_the_sanitized_mean_of_their_meta_gradients(first_update):
    """RMSProp's step (its momentum slot, lr g / sqrt(0.9 + 0.1 g^2), and the weights' change) is that of
    g = sanitize(mean of the two optimizees' separately computed raw meta-gradients); the record holds their mean
    losses."""
    run, record, before, references = first_update
    iterations = run.iterations
    assert run.num_optimizees == iterations.count == 2 and record["applied"] == 1
    # the meta-objective is a mean log-ratio near 0: float32 losses of ~5 make it exact to ~1e-8 only
    assert record["meta_loss"] == pytest.approx(np.mean([r[0] for r in references]), rel=0, abs=1e-7)
    assert record["loss"] == pytest.approx(np.mean([r[1][-1] for r in references]), rel=1e-6)
    assert record["initial_loss"] == pytest.approx(np.mean([r[2] for r in references]), rel=1e-6)
    mean = [np.mean(pair, axis=0) for pair in zip(*[r[3] for r in references])]
    sanitized = [np.clip(np.where(np.isfinite(g), g, 0.0), -1e4, 1e4) for g in mean]
    for old, new, variable, g, g0 in zip(before, weights(run), iterations.variables, sanitized, references[0][3]):
        step = iterations.meta_optimizer.slots(variable)[1].numpy()
        expected = LR * g / np.sqrt(0.9 + 0.1 * g.astype(np.float64) ** 2)
        np.testing.assert_allclose(step, expected, rtol=1e-6, atol=1e-6 * np.max(np.abs(expected)))
        np.testing.assert_array_equal(new, old - step)  # the weights moved by exactly that step
    changed = [np.max(np.abs(g - g0)) / np.max(np.abs(g)) for g, g0 in zip(sanitized, references[0][3]) if np.any(g)]
    assert max(changed) > 0.1  # the mean is not optimizee 0's meta-gradient: the other optimizee counted
    # each optimizee carries its own final state
    first, second = (tf.nest.flatten(c)[0].numpy() for c in iterations.carried)
    assert all(h.numpy() for h in iterations.has_carried) and not np.array_equal(first, second)


def test_resume_with_two_optimizees_continues_every_stream_and_carried_state(mnist, two_optimizees, tmp_path):
    """Two meta-iterations, checkpointed, then the third and the validation after resuming = the uninterrupted run:
    optimizee 1's data generator, state generator and carried state are in the checkpoint (optimizee 0's state and
    generator, which imitation and validation use, too); another count is refused. The generators exactly; the
    numbers to float32 rounding (two runs of the same graphs were once seen to differ by one ulp in a few entries;
    a stream not restored changes them entirely)."""
    meta_training.ScaleTraining(two_optimizees_config(num_meta_iterations=2, train_dir=str(tmp_path)), mnist).run()
    resumed = meta_training.ScaleTraining(two_optimizees_config(train_dir=str(tmp_path)), mnist)
    assert resumed.resumed and resumed.epoch == 2
    resumed.run()
    whole = two_optimizees
    assert_same_history(resumed.history[1:], whole.history[1:], rel=1e-6)
    for actual, expected in zip(weights(resumed) + carried(resumed), weights(whole) + carried(whole)):
        np.testing.assert_allclose(actual, expected, rtol=1e-6)
    assert resumed.iterations.random_states() == whole.iterations.random_states()
    states = [[g.state.numpy().tolist() for g in run.iterations.state_rngs] for run in (resumed, whole)]
    assert states[0] == states[1]
    assert states[0][1] != seeding.generator(3, f"{STATE_STREAM}/1").state.numpy().tolist()  # it drew, and resumed
    with pytest.raises(errors.UsageError, match="2 optimizees per meta-step, 1 now"):
        meta_training.ScaleTraining(two_optimizees_config(num_optimizees=1, num_meta_iterations=6,
                                                          train_dir=str(tmp_path)), mnist)


# -- the command line -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag,message", [
    ("--strategy=tpu", "error: unknown --strategy='tpu': expected one of default, mirrored, multi_worker"),
    ("--num_optimizees=0", "error: --num_optimizees must be a positive integer, got 0")])
def test_bad_strategy_flags_are_one_line_errors_before_tensorflow_loads(new_user_env, tmp_path, flag, message):
    code, log = run_module("l2o_scale.metarun", new_user_env, "--include_mnist_mlp_problems", f"--train_dir={tmp_path}",
                           flag, timeout=120, report_tensorflow=True)
    assert code == 2 and "Traceback" not in log, log
    assert [line for line in log.splitlines() if line.startswith("error: ")] == [message]
    assert "tensorflow imported: False" in log


# -- two replicas on two logical CPUs, and two worker processes -------------------------------------------------------

def run_script(*args):
    """This file as a script in a fresh process; returns its output."""
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, os.path.abspath(__file__), *args], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300).stdout


def scenario_mirrored(out):
    """`two_optimizees_config()` with one optimizee per replica; its history, final meta-parameters and carried
    states go to `out`."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    problem = tiny_mnist()
    with pytest.raises(errors.UsageError, match="--num_optimizees=3 must be a multiple of the 2 replicas"):
        meta_training.ScaleTraining(config(strategy="mirrored", num_optimizees=3), problem)
    run = meta_training.ScaleTraining(two_optimizees_config(strategy="mirrored"), problem)
    assert run.strategy.num_replicas_in_sync == 2
    assert [g.state.device[-5:] for g in run.iterations.state_rngs] == ["CPU:0", "CPU:1"]
    copies = run.strategy.experimental_local_results(run.iterations.variables[0].value)
    assert sorted(c.device[-5:] for c in copies) == ["CPU:0", "CPU:1"]
    history = run.run()[1:]
    assert run.iterations.parallel._train.experimental_get_tracing_count() == 1
    np.savez(out, history=json.dumps(history), *(weights(run) + carried(run)))


def test_mirrored_two_replicas_compute_what_two_optimizees_on_one_device_do(two_optimizees, tmp_path):
    """The numbers depend on --num_optimizees, not on the devices (up to the order of floating-point sums)."""
    output = run_script("mirrored", str(tmp_path / "results.npz"))
    assert os.path.exists(tmp_path / "results.npz"), output
    results = np.load(tmp_path / "results.npz")
    assert_same_history(json.loads(str(results["history"])), two_optimizees.history[1:])
    expected = weights(two_optimizees) + carried(two_optimizees)
    assert len(expected) > 40 and len(results.files) == len(expected) + 1
    for i, array in enumerate(expected):
        np.testing.assert_allclose(results[f"arr_{i}"], array, rtol=1e-5, atol=1e-6)


def scenario_worker(train_dir, out):
    """One worker of `first_update_config()` under multi_worker ($TF_CONFIG); the chief's results go to `out`."""
    strategy = distribute.strategy_named("multi_worker")  # before TensorFlow runs anything
    run = meta_training.ScaleTraining(first_update_config(strategy="multi_worker", train_dir=train_dir),
                                      tiny_mnist())
    assert strategy.num_replicas_in_sync == 2 and run.num_optimizees == 2
    record = run.run()[-1]
    if run.chief:
        generators = np.array([g.state.numpy() for g in run.iterations.state_rngs])
        np.savez(out, record=json.dumps(record), generators=generators, *(weights(run) + carried(run)))


def test_two_workers_train_as_two_optimizees_on_one_device_and_only_the_chief_writes(first_update, tmp_path):
    """Two local worker processes, one replica and one optimizee each: the numbers of two optimizees on one device,
    and every optimizee's carried state and state generator exchanged, so the chief's checkpoint holds them all;
    only the chief writes files."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for i in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_CONFIG": tf_config}
        command = [sys.executable, os.path.abspath(__file__), "worker", str(tmp_path / f"save{i}"),
                   str(tmp_path / "out.npz")]
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True))
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output
    assert not os.path.exists(tmp_path / "save1")  # the other worker wrote nothing
    assert os.path.exists(tmp_path / "save0" / scale_config.LOGDIR_NAME / "history.json")
    run, record, _, _ = first_update
    results = np.load(tmp_path / "out.npz")
    assert_same_history([json.loads(str(results["record"]))],
                        [{"epoch": 1, **record, "train_steps": run.curriculum.train_steps}])
    assert results["generators"].tolist() == [g.state.numpy().tolist() for g in run.iterations.state_rngs]
    expected = weights(run) + carried(run)
    assert len(results.files) == len(expected) + 2
    for i, array in enumerate(expected):
        np.testing.assert_allclose(results[f"arr_{i}"], array, rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
    {"mirrored": scenario_mirrored, "worker": scenario_worker}[sys.argv[1]](*sys.argv[2:])
