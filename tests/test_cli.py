"""The absl entry points end to end, on tiny budgets, as a user runs them (subprocesses, embedded MNIST sample)."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from l2o_tf import networks

ORIGINAL = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference", "original_models")


@pytest.fixture
def env(tmp_path):
    """No data anywhere but the embedded MNIST sample, and quiet TF."""
    empty = tmp_path / "no_data"
    empty.mkdir()
    return {**os.environ, "L2O_DATA_DIR": str(empty), "TFDS_DATA_DIR": str(empty), "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONUNBUFFERED": "1"}


def run(module, env, *flags, timeout=300):
    result = subprocess.run([sys.executable, "-m", f"l2o_tf.{module}", *flags], env=env, capture_output=True,
                            text=True, timeout=timeout)
    return result.returncode, result.stdout + result.stderr


def history(save_path):
    with open(os.path.join(save_path, "history.json")) as f:
        return json.load(f)


def test_evaluate_adam_writes_records_and_is_reproducible(tmp_path, env):
    out = tmp_path / "out"
    code, log = run("evaluate_dm", env, "--optimizer=Adam", "--learning_rate=0.01", "--problem=mnist",
                    "--num_steps=300", f"--output_path={out}", "--seed=4")
    assert code == 0, log
    assert "embedded sample" in log and "Log Mean Final Error" in log
    with open(out / "Adam_eval_loss_record.pickle-mnist", "rb") as f:
        losses = pickle.load(f)
    assert len(losses) == 300 and all(isinstance(v, float) for v in losses)
    assert np.mean(losses[-50:]) < 0.6 * np.mean(losses[:10])  # Adam(0.01) learns the MLP
    with np.load(out / "Adam_eval_loss_record.pickle-mnist.npz") as data:
        np.testing.assert_array_equal(data["losses"], np.float32(losses))
        assert json.loads(str(data["flags"]))["seed"] == 4
    code, _ = run("evaluate_dm", env, "--optimizer=Adam", "--learning_rate=0.01", "--problem=mnist",
                  "--num_steps=300", f"--output_path={tmp_path / 'again'}", "--seed=4")
    with open(tmp_path / "again" / "Adam_eval_loss_record.pickle-mnist", "rb") as f:
        assert pickle.load(f) == losses


def test_missing_dataset_fails_fast_with_a_clear_error(env):
    start = time.time()
    code, log = run("evaluate_dm", env, "--optimizer=SGD", "--problem=cifar_conv", "--num_steps=10")
    assert code == 2
    assert "cifar10" in log and "--data_dir" in log and "Traceback" not in log
    assert time.time() - start < 5  # the data is checked before TensorFlow is imported


@pytest.mark.parametrize("flags, message", [
    (["--problem=nope", "--optimizer=Adam"], "unknown --problem='nope'"),
    (["--optimizer=Foo"], "unknown --optimizer='Foo'"),
    (["--optimizer=L2L"], "needs --path"),
    (["--optimizer=Adam", "--num_steps=0"], "--num_steps must be positive"),
    (["--optimizer=L2L", "--path=/nonexistent/cw.l2l-0"], "no such weights file"),
])
def test_bad_evaluation_flags_are_one_line_errors(env, flags, message):
    code, log = run("evaluate_dm", env, *flags)
    assert code == 2 and message in log and "Traceback" not in log


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
                    "--evaluation_period=1", "--evaluation_epochs=1", "--num_steps=40", "--seed=1")
    assert code == 0, log
    cell = networks.load(str(save / "cw.l2l-0"))
    assert isinstance(cell, networks.CoordinateWiseDeepLSTM)
    fresh = networks.CoordinateWiseDeepLSTM(seed=1)
    fresh.build()
    assert not np.array_equal(cell.get_original_weights()["linear"]["w"], fresh.get_original_weights()["linear"]["w"])
    kinds = [h["kind"] for h in history(str(save))]
    assert kinds == ["train", "validation", "train", "validation"]
    code, log = run("evaluate_dm", env, "--optimizer=L2L", f"--path={save / 'cw.l2l-0'}", "--problem=mnist",
                    "--num_steps=50", f"--output_path={tmp_path / 'out'}", "--seed=0")
    assert code == 0, log
    assert os.path.exists(tmp_path / "out" / "L2L_eval_loss_record.pickle-mnist")


def test_a_killed_run_resumes_where_its_checkpoint_left_off(tmp_path, env):
    save = tmp_path / "killed"
    flags = [f"--save_path={save}", "--problem=quadratic", "--evaluation_period=3", "--evaluation_epochs=1",
             "--num_steps=20", "--checkpoint_secs=0", "--seed=5"]
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
    done = [h for h in history(str(save)) if h["kind"] != "validation"][-1]["epoch"]
    assert done >= 5
    code, log = run("train_dm", env, *flags, f"--num_epochs={done + 4}")
    assert code == 0, log
    assert f"from epoch {done}" in log
    epochs = [h["epoch"] for h in history(str(save)) if h["kind"] != "validation"]
    assert epochs == list(range(1, done + 5))  # nothing lost, nothing repeated


def test_resume_refuses_a_different_run(tmp_path, env):
    save = tmp_path / "run"
    code, log = run("train_dm", env, f"--save_path={save}", "--problem=quadratic", "--num_epochs=1",
                    "--evaluation_period=1", "--evaluation_epochs=1", "--num_steps=20")
    assert code == 0, log
    code, log = run("train_dm", env, f"--save_path={save}", "--problem=mnist", "--num_epochs=2")
    assert code == 2 and "--problem='quadratic' there, 'mnist' now" in log


@pytest.mark.parametrize("module, key, problem", [("train_dm", "cw", "quadratic"), ("train_rnnprop", "rp", "mnist")])
def test_curriculum_with_imitation_runs_through_its_stages(tmp_path, env, module, key, problem):
    save = tmp_path / module
    code, log = run(module, env, f"--save_path={save}", f"--problem={problem}", "--if_cl", "--if_mt",
                    "--num_steps_schedule=20 40", "--mt_ratios=0.5", "--min_num_eval=1", "--evaluation_period=1",
                    "--evaluation_epochs=1", "--num_epochs=8", "--seed=2")
    assert code == 0, log
    records = history(str(save))
    validations = [h for h in records if h["kind"] == "validation"]
    assert validations[0]["steps"] == 40 and validations[0]["decision"] == "improved"
    assert {h["kind"] for h in records} >= {"train", "imitation[adam]"}
    assert os.path.exists(save / f"{key}.l2l-0")
    for h in validations:  # stage 0 validates at stage 1's length, the last stage at its own
        assert h["steps"] == 40


@pytest.mark.parametrize("module", ["train_dm", "train_rnnprop"])
def test_imitation_and_self_improving_modes_train(tmp_path, env, module):
    for mode in (["--if_mt", "--mt_ratio=1.0", "--optimizers=rmsprop,nag", "--num_mt=2"],
                 ["--self_improving", "--auxiliary_decay_epochs=2"]):
        save = tmp_path / mode[0].strip("-")
        code, log = run(module, env, f"--save_path={save}", "--problem=quadratic", "--num_steps=20",
                        "--num_epochs=2", "--evaluation_period=2", "--evaluation_epochs=1", "--seed=0", *mode)
        assert code == 0, log
        epochs = [h for h in history(str(save)) if h["kind"] != "validation"]
        assert all(h["applied"] == 1 for h in epochs)  # one unroll of 20 steps, one meta-update each
        if mode[0] == "--if_mt":
            assert [h["kind"] for h in epochs] == ["imitation[rmsprop]", "imitation[nag]"]
        else:  # the auxiliaries' probability decays from 1/(k+1) to 0 over --auxiliary_decay_epochs=2
            assert [h["kind"] for h in epochs] == ["train", "train"]
            assert [h["auxiliary_probability"] for h in epochs] == [0.25, 0.125]


def test_imported_original_dm_cl_il_learns_mnist(tmp_path, env):
    path = os.path.join(ORIGINAL, "dm_cl_il", "cw.l2l-0")
    if not os.path.exists(path):
        pytest.skip("original trained models not present")
    code, log = run("evaluate_dm", env, "--optimizer=L2L", f"--path={path}", "--problem=mnist", "--num_steps=300",
                    f"--output_path={tmp_path}", "--seed=2")
    assert code == 0, log
    with open(tmp_path / "L2L_eval_loss_record.pickle-mnist", "rb") as f:
        losses = np.array(pickle.load(f))
    assert losses[-50:].mean() < 0.5 * losses[:5].mean()


def test_a_finished_curriculum_is_not_trained_further_when_run_again(tmp_path, env):
    flags = [f"--save_path={tmp_path / 'cl'}", "--problem=quadratic", "--if_cl", "--num_steps_schedule=20 40",
             "--min_num_eval=1", "--evaluation_period=1", "--evaluation_epochs=1", "--num_epochs=30", "--seed=2"]
    code, log = run("train_dm", env, *flags)
    assert code == 0, log
    records = history(str(tmp_path / "cl"))
    decisions = [h["decision"] for h in records if h["kind"] == "validation"]
    assert decisions[-1] in ("stop", "finished") and len(decisions) < 30  # the curriculum ended the run
    if "advance" in decisions:  # the stage after an advance validates at the last length
        assert [h["stage"] for h in records if h["kind"] == "validation"][decisions.index("advance")] == 1
    code, log = run("train_dm", env, *flags)
    assert code == 0 and "already ended" in log
    assert history(str(tmp_path / "cl")) == records


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path, env):
    (tmp_path / "checkpoint.npz").write_bytes(b"not a zip file")
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
