"""The absl entry points end to end, on tiny budgets, as a user runs them (subprocesses, embedded MNIST sample)."""
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import l2o_tf
from conftest import run_module
from l2o_tf import cli
from l2o_tf import models
from l2o_tf import networks
from l2o_tf import optimizers

# TensorFlow's start-up noise on a machine without a GPU (and on every x86 one: oneDNN), off by default
TF_NOISE = ("oneDNN custom operations", "Could not find cuda drivers", "failed call to cuInit",
            "All log messages before absl::InitializeLog")


@pytest.fixture
def env(new_user_env):
    return new_user_env


def run(module, env, *flags, timeout=300):
    return run_module(f"l2o_tf.{module}", env, *flags, timeout=timeout)


def run_checked_before_tensorflow(module, env, *flags):
    """Run an entry point that must stop at its fast checks: exit 2, one error line, TensorFlow never imported."""
    code, log = run_module(f"l2o_tf.{module}", env, *flags, timeout=120, report_tensorflow=True)
    assert code == 2, log
    assert "tensorflow imported: False" in log and "Traceback" not in log
    assert len([line for line in log.splitlines() if line.startswith("error: ")]) == 1, log
    return log


def history(save_path):
    with open(os.path.join(save_path, "history.json")) as f:
        return json.load(f)


def test_evaluate_adam_writes_records_and_is_reproducible(tmp_path, env):
    out = tmp_path / "out"
    code, log = run("evaluate_dm", env, "--optimizer=adam", "--learning_rate=0.01", "--problem=mnist",
                    "--num_steps=300", f"--output_path={out}", "--seed=4")  # names are case-insensitive
    assert code == 0, log
    with open(out / "Adam_eval_loss_record.pickle-mnist", "rb") as f:  # named in the canonical spelling
        losses = pickle.load(f)
    assert len(losses) == 300 and all(isinstance(v, float) for v in losses)
    assert np.mean(losses[-50:]) < 0.6 * np.mean(losses[:10])  # Adam(0.01) learns the MLP
    with np.load(out / "Adam_eval_loss_record.pickle-mnist.npz") as data:
        np.testing.assert_array_equal(data["losses"], np.float32(losses))
        run_flags = json.loads(str(data["flags"]))
    assert run_flags["seed"] == 4 and run_flags["optimizer"] == "Adam"
    assert run_flags["embedded_sample"] is True and run_flags["data_source"].startswith("embedded sample")
    # the sample is announced as a warning line at the start and again at the end
    warnings = [line for line in log.splitlines() if line.startswith("W") and "embedded sample" in line]
    assert len(warnings) == 2 and log.rstrip().splitlines()[-1] == warnings[1], log
    # the original's log10 "Log Mean Final Error" and ln(mean loss), both of the mean over all steps
    mean = np.mean(np.float32(losses))
    assert f"Log Mean Final Error: {np.log10(mean):.2f}" in log and f"ln(mean loss): {np.log(mean):.2f}" in log
    progress = [line for line in log.splitlines() if "step 300/300" in line]
    assert len(progress) == 1 and "ETA 0s" in progress[0]
    assert not [noise for noise in TF_NOISE if noise in log], log
    code, _ = run("evaluate_dm", env, "--optimizer=Adam", "--learning_rate=0.01", "--problem=mnist",
                  "--num_steps=300", f"--output_path={tmp_path / 'again'}", "--seed=4")
    with open(tmp_path / "again" / "Adam_eval_loss_record.pickle-mnist", "rb") as f:
        assert pickle.load(f) == losses


def test_missing_dataset_is_reported_before_tensorflow_loads(env):
    log = run_checked_before_tensorflow("evaluate_dm", env, "--optimizer=SGD", "--problem=cifar_conv",
                                        "--num_steps=10")
    assert "'cifar10' 'test'" in log and "--data_dir" in log


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_given_data_location_without_the_data_is_an_error(env, tmp_path, how):
    typo = tmp_path / "mnsit"
    if how == "env":
        env = {**env, "L2O_DATA_DIR": str(typo)}
    log = run_checked_before_tensorflow("evaluate_dm", env, "--optimizer=Adam", "--num_steps=10",
                                        *([f"--data_dir={typo}"] if how == "flag" else []))
    assert f"raw files in {typo}" in log and "no such directory" in log
    assert "embedded MNIST sample: not used" in log


@pytest.fixture
def weights_files(tmp_path):
    """An L2O-DM and an RNNprop file as `networks.save` writes them, an original-style pickle of RNNprop (no
    sidecar), and two pickles that are not learned optimizers."""
    files = {}
    for net in ("dm", "rnnprop"):
        cell = networks.NETS[net](seed=0)
        cell.build()
        files[net] = networks.save(cell, str(tmp_path / net))
    files["rnnprop_original"] = str(tmp_path / "rp.l2l-7")
    with open(files["rnnprop"], "rb") as source, open(files["rnnprop_original"], "wb") as copy:
        copy.write(source.read())
    files["other_dict"] = str(tmp_path / "other.l2l")
    with open(files["other_dict"], "wb") as f:
        pickle.dump({"mlp": {"w": np.zeros(3, np.float32)}}, f)
    files["list"] = str(tmp_path / "list.l2l")
    with open(files["list"], "wb") as f:
        pickle.dump([1.0, 2.0], f)
    return files


@pytest.mark.parametrize("module, flags, message", [
    ("evaluate_dm", ["--problem=nope", "--optimizer=Adam"], "unknown --problem='nope'"),
    ("evaluate_dm", ["--optimizer=Foo"], "unknown --optimizer='Foo'"),
    ("evaluate_dm", ["--optimizer=L2L"], "needs --path"),
    ("evaluate_dm", ["--optimizer=Adam", "--num_steps=0"], "--num_steps must be positive, got 0"),
    ("evaluate_rnnprop", ["--optimizer=adam", "--num_epochs=-1"], "--num_epochs must be positive, got -1"),
    ("evaluate_dm", ["--optimizer=sgd", "--learning_rate=0"], "--learning_rate must be positive"),
    ("evaluate_dm", ["--path=/nonexistent/cw.l2l-0"], "'/nonexistent/cw.l2l-0' is neither a shipped model (dm, "),
    ("evaluate_dm", ["--path={tmp}"], "no cw.l2l-0, rp.l2l-0 or TensorFlow checkpoint in this directory"),
    ("evaluate_dm", ["--path=rnnprop_cl_il"], "rnnprop_cl_il holds an RNNprop optimizer (rp.l2l), not an L2O-DM"),
    ("evaluate_rnnprop", ["--path=scale_smoke"], "scale_smoke is an L2O-Scale checkpoint: evaluate it with "
                                                 "`python -m l2o_scale.metatest --train_dir=scale_smoke`"),
    ("evaluate_dm", ["--path={rnnprop}"], "holds an RNNprop optimizer (rp.l2l), not an L2O-DM optimizer (cw.l2l): "
                                          "evaluate it with `python -m l2o_tf.evaluate_rnnprop`"),
    ("evaluate_dm", ["--path={rnnprop_original}"], "holds an RNNprop optimizer (rp.l2l), not an L2O-DM"),
    ("evaluate_rnnprop", ["--path={dm}"], "holds an L2O-DM optimizer (cw.l2l), not an RNNprop optimizer (rp.l2l): "
                                          "evaluate it with `python -m l2o_tf.evaluate_dm`"),
    ("evaluate_rnnprop", ["--path={other_dict}"], "not an L2O-DM or RNNprop weights file (modules mlp;"),
    ("evaluate_dm", ["--path={list}"], "not a learned optimizer's weights file (expected a pickled dict"),
    ("train_dm", ["--num_steps=0"], "--num_steps"),
    ("train_rnnprop", ["--problem=Mnist"], "unknown --problem='Mnist'"),
    ("train_rnnprop", ["--imitation_initial_state=last"], "unknown --imitation_initial_state='last': expected one of "
                                                          "zeros, main"),
    ("train_dm", ["--num_epoch=3"], "error: Unknown command line flag 'num_epoch'. Did you mean: num_epochs ?"),
    ("evaluate_rnnprop", ["--seed=1.5"], "error: flag --seed=1.5: invalid literal for int()"),
    ("reproduce", ["--presets=short"], "Unknown command line flag 'presets'. Did you mean: preset ?"),
])
def test_bad_flags_are_one_line_errors_before_tensorflow_loads(env, tmp_path, weights_files, module, flags,
                                                               message):
    flags = [flag.format(tmp=tmp_path, **weights_files) for flag in flags]
    log = run_checked_before_tensorflow(module, env, *flags)
    assert message in log, log
    assert ".json" not in log  # no misleading word about a config sidecar


@pytest.mark.parametrize("module", ["evaluate_dm", "evaluate_rnnprop", "train_dm", "train_rnnprop"])
def test_help_lists_the_project_flags(env, module):
    result = subprocess.run([sys.executable, "-m", f"l2o_tf.{module}", "--help"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    own = ["--problem", "--num_steps", "--data_dir", "--seed"]
    own += ["--optimizer:", "--path"] if module.startswith("evaluate") else ["--save_path", "--if_cl", "--if_mt"]
    own += ["--beta1"] if module.endswith("rnnprop") else []
    for flag in own:
        assert flag in result.stdout, (flag, result.stdout)
    assert "--helpfull" in result.stdout and "--only_check_args" not in result.stdout  # absl's own: --helpfull
    full = subprocess.run([sys.executable, "-m", f"l2o_tf.{module}", "--helpfull"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert full.returncode == 0 and "--verbosity" in full.stdout and "--problem" in full.stdout


@pytest.mark.parametrize("module", ["l2o_tf.evaluate_dm", "l2o_tf.train_rnnprop", "l2o_tf.reproduce",
                                    "l2o_tf.tune_baselines", "l2o_tf.plot", "l2o_scale.metarun",
                                    "l2o_scale.metatest"])
def test_help_lists_each_flag_once_under_a_usage_that_keeps_its_lines(env, module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    usage, _, listing = result.stdout.partition("\nflags:\n")
    names = re.findall(r"^  --(?:\[no\])?(\w+):", listing, flags=re.MULTILINE)
    assert len(names) > 3 and len(names) == len(set(names)), sorted(names)
    assert not re.search(r"\S {4,}--", usage), usage  # a continued command line stays on its own lines


def test_tensorflow_noise_is_filtered_and_other_output_kept(capfd):
    """What import_tensorflow does around TensorFlow's import: drop the start-up notices, keep anything else."""
    with cli.filtered_stderr():
        os.write(2, b"I0000 00:00:1.0  1 port.cc:153] oneDNN custom operations are on. You may see ...\n"
                    b"E0000 00:00:1.0  1 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n"
                    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
                    b"something the user must see\n")
    captured = capfd.readouterr()
    assert captured.err == "something the user must see\n"


def test_bad_training_flags_are_one_line_errors(env, tmp_path):
    code, log = run("train_dm", env, "--if_cl")
    assert code == 2 and "--if_cl needs --save_path" in log
    code, log = run("train_dm", env, f"--save_path={tmp_path}", "--if_cl", "--num_steps_schedule=100 50")
    assert code == 2 and "non-decreasing" in log
    code, log = run("train_dm", env, "--if_mt", "--optimizers=adam,lion")
    assert code == 2 and "unknown optimizer 'lion'" in log


def test_train_dm_writes_a_loadable_optimizer_that_evaluates(tmp_path, env):
    save = tmp_path / "dm"
    code, log = run("train_dm", env, f"--save_path={save}", "--problem=mnist", "--num_epochs=2",
                    "--evaluation_period=1", "--evaluation_epochs=1", "--num_steps=10", "--unroll_length=10",
                    "--seed=1")
    assert code == 0, log
    cell = networks.load(str(save / "cw.l2l-0"))
    assert isinstance(cell, networks.CoordinateWiseDeepLSTM)
    fresh = networks.CoordinateWiseDeepLSTM(seed=1)
    fresh.build()
    assert not np.array_equal(cell.get_original_weights()["linear"]["w"], fresh.get_original_weights()["linear"]["w"])
    kinds = [h["kind"] for h in history(str(save)) if h["kind"] != "start"]
    assert kinds == ["train", "validation", "train", "validation"]
    code, log = run("evaluate_dm", env, "--optimizer=L2L", f"--path={save / 'cw.l2l-0'}", "--problem=mnist",
                    "--num_steps=50", f"--output_path={tmp_path / 'out'}", "--seed=0")
    assert code == 0, log
    assert os.path.exists(tmp_path / "out" / "L2L_eval_loss_record.pickle-mnist")


def test_a_killed_run_resumes_where_its_checkpoint_left_off_and_refuses_another_run(tmp_path, env):
    save = tmp_path / "killed"
    flags = [f"--save_path={save}", "--problem=quadratic", "--evaluation_period=3", "--evaluation_epochs=1",
             "--num_steps=5", "--unroll_length=5", "--checkpoint_secs=1", "--seed=5"]
    process = subprocess.Popen([sys.executable, "-m", "l2o_tf.train_dm", *flags, "--num_epochs=100000"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            if os.path.exists(save / "history.json") and len(history(str(save))) >= 8:
                break
            time.sleep(0.5)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    done = [h for h in history(str(save)) if h["kind"] == "train"][-1]["epoch"]
    assert done >= 5
    code, log = run("train_dm", env, *flags, f"--num_epochs={done + 4}")
    assert code == 0, log
    assert "resuming" in log  # from the checkpoint: history.json is written just after it, so at most one behind
    epochs = [h["epoch"] for h in history(str(save)) if h["kind"] == "train"]
    assert epochs == list(range(1, done + 5))  # nothing lost, nothing repeated
    code, log = run("train_dm", env, *flags, "--problem=mnist", f"--num_epochs={done + 8}")  # another run
    assert code == 2 and "--problem='quadratic' there, 'mnist' now" in log


@pytest.mark.parametrize("module, key", [("train_dm", "cw"), ("train_rnnprop", "rp")])
def test_curriculum_with_imitation_advances_to_the_longer_stage(tmp_path, env, module, key):
    """A meta learning rate of 1e-9 keeps the optimizer as it is, so validations differ only by their random
    trajectories and the first that is not a new best (within 8 with probability 1 - 1/8!) advances the stage.
    Imitation epochs start from the original's carried state (--imitation_initial_state=main)."""
    save = tmp_path / module
    code, log = run(module, env, f"--save_path={save}", "--problem=quadratic", "--if_cl", "--if_mt",
                    "--num_steps_schedule=5 15", "--unroll_length=5", "--mt_ratios=0.5", "--min_num_eval=1", "--evaluation_period=1",
                    "--evaluation_epochs=1", "--num_epochs=8", "--learning_rate=1e-9", "--seed=2",
                    "--imitation_initial_state=main")
    assert code == 0, log
    records = history(str(save))
    assert records[0]["config"]["imitation_initial_state"] == "main"
    epochs = [h for h in records if h["kind"] == "train" or h["kind"].startswith("imitation")]
    validations = [h for h in records if h["kind"] == "validation"]
    assert {h["kind"] for h in epochs} == {"train", "imitation[adam]"}
    decisions = [h["decision"] for h in validations]
    assert decisions[0] == "improved" and "advance" in decisions
    advance = validations[decisions.index("advance")]["epoch"]
    assert advance < 8  # so that stage 1 trained at least one epoch
    # stage 0 trains on 5 steps and validates on stage 1's 15; stage 1 trains and validates on 15
    assert [h["train_steps"] for h in epochs] == [5 if h["epoch"] <= advance else 15 for h in epochs]
    assert all(h["steps"] == 15 for h in validations)
    stages = [h for h in records if h["kind"] == "stage"]
    assert len(stages) == 1 and stages[0]["stage"] == 1 and stages[0]["train_steps"] == 15
    assert os.path.exists(save / f"{key}.l2l-0")


@pytest.mark.parametrize("module, mode", [
    ("train_dm", ["--if_mt", "--mt_ratio=1.0", "--optimizers=rmsprop,nag", "--num_mt=2"]),
    ("train_rnnprop", ["--self_improving", "--auxiliary_decay_epochs=2"])])
def test_imitation_and_self_improving_modes_train(tmp_path, env, module, mode):
    """The modes' flags reach the trainer (both modules share it: the curriculum test runs imitation on each)."""
    code, log = run(module, env, f"--save_path={tmp_path}", "--problem=quadratic", "--num_steps=5",
                    "--unroll_length=5", "--num_epochs=2", "--evaluation_period=2", "--evaluation_epochs=1",
                    "--seed=0", *mode)
    assert code == 0, log
    epochs = [h for h in history(str(tmp_path)) if h["kind"] not in ("start", "validation")]
    assert all(h["applied"] == 1 for h in epochs)  # one unroll of 5 steps, one meta-update each
    if mode[0] == "--if_mt":
        assert [h["kind"] for h in epochs] == ["imitation[rmsprop]", "imitation[nag]"]
    else:  # the auxiliaries' probability decays from 1/(k+1) to 0 over --auxiliary_decay_epochs=2
        assert [h["kind"] for h in epochs] == ["train", "train"]
        assert [h["auxiliary_probability"] for h in epochs] == [0.25, 0.125]


def test_imported_original_dm_cl_il_learns_mnist_by_its_shipped_name(tmp_path, env):
    code, log = run("evaluate_dm", env, "--optimizer=L2L", "--path=dm_cl_il", "--problem=mnist", "--num_steps=300",
                    f"--output_path={tmp_path}", "--seed=2")
    assert code == 0, log
    with open(tmp_path / "L2L_eval_loss_record.pickle-mnist", "rb") as f:
        losses = np.array(pickle.load(f))
    assert losses[-50:].mean() < 0.5 * losses[:5].mean()
    with np.load(tmp_path / "L2L_eval_loss_record.pickle-mnist.npz") as record:
        recorded = json.loads(str(record["flags"]))
    assert (recorded["path"], recorded["weights_file"]) == ("dm_cl_il", models.shipped_path("dm_cl_il"))


def test_evaluate_takes_the_directory_of_a_weights_file(tmp_path, env, weights_files):
    directory = os.path.dirname(weights_files["rnnprop"])
    code, log = run("evaluate_rnnprop", env, f"--path={directory}", "--problem=quadratic", "--num_steps=20",
                    f"--output_path={tmp_path}", "--seed=0")
    assert code == 0, log
    with np.load(tmp_path / "L2L_eval_loss_record.pickle-quadratic.npz") as record:
        assert json.loads(str(record["flags"]))["weights_file"] == weights_files["rnnprop"]


def test_a_finished_curriculum_is_not_trained_further_when_run_again(tmp_path, env):
    flags = [f"--save_path={tmp_path / 'cl'}", "--problem=quadratic", "--if_cl", "--num_steps_schedule=5 10",
             "--unroll_length=5",
             "--min_num_eval=1", "--evaluation_period=1", "--evaluation_epochs=1", "--num_epochs=30", "--seed=2",
             "--learning_rate=1e-9"]  # a stationary optimizer: the curriculum ends the run within a few epochs
    code, log = run("train_dm", env, *flags)
    assert code == 0, log
    records = history(str(tmp_path / "cl"))
    decisions = [h["decision"] for h in records if h["kind"] == "validation"]
    assert decisions[-1] in ("stop", "finished") and len(decisions) < 30  # the curriculum ended the run
    code, log = run("train_dm", env, *flags)
    assert code == 0 and "already ended" in log
    assert history(str(tmp_path / "cl")) == records


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path, env):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    (tmp_path / "checkpoints" / "ckpt-1.index").write_bytes(b"not a checkpoint")
    code, log = run("train_dm", env, f"--save_path={tmp_path}", "--problem=quadratic", "--num_epochs=1")
    assert code == 2 and "not a readable training checkpoint" in log and "Traceback" not in log


def test_cifar_problems_evaluate_from_cifar_binary_batches(tmp_path, env):
    """No CIFAR-10 offline: synthetic batches of the real format drive the whole CIFAR path."""
    batches = tmp_path / "data" / "cifar-10-batches-bin"
    batches.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = rng.integers(0, 256, size=(40, 3073), dtype=np.uint8)
        records[:, 0] %= 10
        records.tofile(batches / name)
    code, log = run("evaluate_dm", env, "--optimizer=NAG", "--learning_rate=0.01", "--problem=cifar_conv",
                    "--num_steps=5", f"--data_dir={tmp_path / 'data'}", f"--output_path={tmp_path / 'out'}")
    assert code == 0, log
    assert "CIFAR-10 binary batches" in log
    with open(tmp_path / "out" / "NAG_eval_loss_record.pickle-cifar_conv", "rb") as f:
        losses = pickle.load(f)
    assert len(losses) == 5 and all(0 < v < 10 for v in losses)


# -- the library's own errors and exports ------------------------------------------------------------------------


@pytest.mark.parametrize("make_rule", [lambda: networks.CoordinateWiseDeepLSTM(seed=0),
                                       lambda: networks.RNNprop(seed=0), lambda: optimizers.Adam(0.01)],
                         ids=["dm", "rnnprop", "adam"])
def test_step_refuses_float64_and_wrong_length_gradients_clearly(make_rule):
    rule = make_rule()
    name = type(rule).__name__
    state = rule.initial_state(5)
    with pytest.raises(TypeError, match=f"{name}.step needs float32 gradients, got float64; cast them first"):
        rule.step(tf.zeros([5], tf.float64), state)
    with pytest.raises(ValueError, match=f"{name}.step got 4 gradient coordinates for a state made for 5"):
        rule.step(tf.zeros([4]), state)
    params = [tf.zeros([2, 2]), tf.zeros([3])]  # the list form: 7 coordinates
    state = rule.initial_state(params)
    with pytest.raises(ValueError, match="got 6 gradient coordinates for a state made for 7"):
        rule.step([tf.zeros([2, 2]), tf.zeros([2])], state)
    deltas, _ = rule.step([tf.ones([2, 2]), tf.ones([3])], state)
    assert [tuple(d.shape) for d in deltas] == [(2, 2), (3,)]


def test_load_says_what_is_wrong_with_a_file(weights_files):
    with pytest.raises(networks.WeightsFileError, match="no lstm_1/w_gates and b_gates: not an L2O-DM or RNNprop"):
        networks.load(weights_files["other_dict"])
    with pytest.raises(networks.WeightsFileError, match="holds a CoordinateWiseDeepLSTM, which takes no beta1"):
        networks.load(weights_files["dm"], beta1=0.9)
    assert networks.load(weights_files["rnnprop_original"], beta1=0.9).beta1 == 0.9


def test_the_package_exposes_its_modules():
    package_dir = os.path.dirname(l2o_tf.__file__)

    def is_library_module(name):  # not the command-line layer: the entry points and the flags they share
        with open(os.path.join(package_dir, name), encoding="utf-8") as f:
            return name != "cli.py" and 'if __name__ == "__main__":' not in f.read()

    modules = {name[:-3] for name in os.listdir(package_dir)
               if name.endswith(".py") and not name.startswith("_") and is_library_module(name)}
    assert {"keras_step", "rules", "networks", "optimizers", "problems", "datasets", "meta"} <= modules
    assert modules <= set(dir(l2o_tf)), modules - set(dir(l2o_tf))
    for name in sorted(modules):
        assert getattr(l2o_tf, name).__name__ == f"l2o_tf.{name}"
    assert callable(l2o_tf.keras_step.apply_update) and l2o_tf.rules.UpdateRule
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        getattr(l2o_tf, "nope")


def test_importing_the_package_and_cli_loads_no_tensorflow():
    code = ("import sys, l2o_tf, l2o_tf.cli, l2o_tf.datasets, l2o_tf.original_pickle; "
            "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def test_tensorflow_info_lines_are_dropped_but_its_warnings_and_ours_kept():
    import logging as python_logging

    from l2o_tf import cli

    def record(level, path):
        return python_logging.LogRecord("absl", level, path, 1, "message", (), None)

    saver = os.path.join(os.sep, "site-packages", "tensorflow", "python", "checkpoint", "functional_saver.py")
    ours = os.path.join(os.sep, "work", "l2o_tf", "training.py")
    assert not cli._no_tensorflow_info(record(python_logging.INFO, saver))
    assert cli._no_tensorflow_info(record(python_logging.WARNING, saver))
    assert cli._no_tensorflow_info(record(python_logging.INFO, ours))
