"""The trainer as a library: MetaTraining(config, problem) built and run in-process, on tiny budgets."""
import glob
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from l2o_tf import config as config_lib
from l2o_tf import curriculum
from l2o_tf import errors
from l2o_tf import meta
from l2o_tf import networks
from l2o_tf import original_pickle
from l2o_tf import rules
from l2o_tf import seeding
from l2o_tf import training


def config(**overrides):
    values = dict(problem="quadratic", num_epochs=4, num_steps=10, unroll_length=5, evaluation_period=2,
                  evaluation_epochs=1, seed=3)
    return config_lib.TrainConfig(**{**values, **overrides})


def weights(cell):
    return [v.numpy().copy() for v in cell.weights]


def epochs(history):
    return [h for h in history if h["kind"] == "train" or h["kind"].startswith("imitation")]


def record_unrolls(run):
    """Wrap the trainer's train_unroll to keep (trajectory in, trajectory out) of every meta-iteration."""
    calls, original = [], run.trainer.train_unroll

    def wrapped(trajectory):
        result = original(trajectory)
        calls.append((trajectory, result[0]))
        return result

    run.trainer.train_unroll = wrapped
    return calls


def script_validation(run, costs):
    """Replace validation by scripted costs; returns the list of step counts it was asked for."""
    asked, costs = [], list(costs)

    def validate(steps):
        asked.append(steps)
        return costs.pop(0)

    run.validate = validate
    return asked


def weights_at_validations(run):
    """{epoch: the cell's weights when that epoch's validation starts}, filled as the run goes."""
    snapshots, original = {}, run.evaluate

    def evaluate():
        snapshots[run.epoch] = weights(run.cell)
        return original()

    run.evaluate = evaluate
    return snapshots


def flat(tensors):
    return rules.flatten(tensors).numpy()


def test_the_trajectory_is_carried_across_unrolls_and_reset_per_epoch(quadratic):
    run = training.MetaTraining(config(num_epochs=2, evaluation_period=10), quadratic)
    calls = record_unrolls(run)
    run.run()
    assert len(calls) == 4  # 2 epochs x 10 steps / 5
    (first_in, first_out), (second_in, _), (third_in, _), _ = calls
    np.testing.assert_array_equal(flat(second_in.params), flat(first_out.params))
    for carried, produced in zip(second_in.state, first_out.state):
        np.testing.assert_array_equal(carried.numpy(), produced.numpy())
    assert not np.array_equal(flat(third_in.params), flat(first_out.params))  # epoch 2: a fresh optimizee
    assert not np.array_equal(flat(third_in.params), flat(first_in.params))
    assert all(np.all(s.numpy() == 0) for s in third_in.state)               # and a fresh (zero) LSTM state


def test_validate_is_the_sum_of_fresh_trajectories_final_losses(quadratic):
    run = training.MetaTraining(config(evaluation_epochs=3), quadratic)
    cost = run.validate(12)  # whole unrolls: 10 steps
    runner = meta.Runner(quadratic, run.cell, seeding.generator(3, "validation"))
    expected = sum(runner.final_loss(runner.new_trajectory(), 10) for _ in range(3))
    assert cost == pytest.approx(expected, rel=1e-6)
    assert cost != pytest.approx(run.validate(12), rel=1e-6)  # the next validation draws fresh trajectories


def test_a_curriculum_advance_restores_the_stages_best_and_revalidates(quadratic, tmp_path):
    run = training.MetaTraining(config(if_cl=True, num_steps_schedule=(5, 10, 15), min_num_eval=2,
                                       evaluation_period=1, num_epochs=3, save_path=str(tmp_path)), quadratic)
    asked = script_validation(run, [5.0, 6.0, 7.0, 4.5])
    run.run()  # epoch 1: improved (5.0) and saved; epoch 2: 6.0, no better -> advance; restore; baseline 7.0
    decisions = [h["decision"] for h in run.history if h["kind"] == "validation"]
    assert decisions[:2] == [curriculum.IMPROVED, curriculum.ADVANCE]
    assert asked[:3] == [10, 10, 15]  # stage 0 validates on stage 1's length; the new baseline on stage 2's
    stage = [h for h in run.history if h["kind"] == "stage"][0]
    assert stage["stage"] == 1 and stage["baseline"] == 7.0 and stage["train_steps"] == 10
    assert [h["train_steps"] for h in epochs(run.history)] == [5, 5, 10]
    # epoch 3 trained from the restored stage-0 best, then 4.5 < 7.0 improved it: stage 1 saved
    assert decisions[2] == curriculum.IMPROVED and os.path.exists(tmp_path / "cw.l2l-1")


def test_the_restored_weights_are_the_stages_best(quadratic, tmp_path):
    run = training.MetaTraining(config(if_cl=True, num_steps_schedule=(5, 10), min_num_eval=2,
                                       evaluation_period=1, num_epochs=2, save_path=str(tmp_path)), quadratic)
    script_validation(run, [5.0, 6.0, 9.0])
    best = {}
    original_save = run.save_model

    def save_model(index):
        original_save(index)
        best["weights"] = weights(run.cell)

    run.save_model = save_model
    run.run()
    assert run.curriculum.stage == 1 and run.curriculum.best == 9.0
    for mine, saved in zip(weights(run.cell), best["weights"]):  # epoch 2's training was undone by the restore
        np.testing.assert_array_equal(mine, saved)


def test_imitation_ratio_per_stage(quadratic, tmp_path):
    cl = training.MetaTraining(config(if_cl=True, if_mt=True, save_path=str(tmp_path)), quadratic)
    ratios = []
    for stage in range(10):
        cl.curriculum.stage = min(stage, len(cl.curriculum.schedule) - 1)
        ratios.append(cl.imitation_ratio())
    assert ratios == [0.0, 0.1, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]  # the DM default, stage 0 never imitates
    assert training.MetaTraining(config(if_mt=True, mt_ratio=0.7), quadratic).imitation_ratio() == 0.7
    assert training.MetaTraining(config(), quadratic).imitation_ratio() == 0.0


def test_if_scale_scales_training_trajectories_only(quadratic):
    run = training.MetaTraining(config(if_scale=True, rd_scale_bound=2.0, num_epochs=1), quadratic)
    calls = record_unrolls(run)
    run.train_epoch()
    log_scale = np.log(flat(calls[0][0].scale))
    assert log_scale.min() < -1.8 and log_scale.max() > 1.8 and np.all(np.abs(log_scale) <= 2.0 + 1e-5)
    assert all(np.array_equal(flat(t.scale), flat(calls[0][0].scale)) for t, _ in calls)  # kept for the epoch
    assert np.all(flat(run.validator.new_trajectory().scale) == 1.0)
    plain = training.MetaTraining(config(num_epochs=1), quadratic)
    calls = record_unrolls(plain)
    plain.train_epoch()
    assert np.all(flat(calls[0][0].scale) == 1.0)


def test_saved_indices_and_l2l_0_is_the_best_validated_model(quadratic, tmp_path):
    run = training.MetaTraining(config(evaluation_period=1, num_epochs=4, save_path=str(tmp_path)), quadratic)
    script_validation(run, [3.0, 2.0, 2.5, 2.2])
    snapshots = weights_at_validations(run)
    run.run()
    saved = sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "cw.l2l-*")) if not p.endswith(".json"))
    assert saved == ["cw.l2l-0", "cw.l2l-1", "cw.l2l-2"]  # epochs 3 and 4 did not beat epoch 2
    best = original_pickle.read(str(tmp_path / "cw.l2l-0"))
    cell = networks.for_problem("dm", "quadratic")
    cell.set_original_weights(best)
    for mine, expected in zip(weights(cell), snapshots[2]):
        np.testing.assert_array_equal(mine, expected)
    assert not all(np.array_equal(a, b) for a, b in zip(snapshots[2], snapshots[4]))


def test_snapshots_keep_every_nth_epochs_weights_and_l2l_0_stays_the_best(quadratic, tmp_path):
    """--snapshot_every=2: l2l-2 and l2l-4 hold the weights after epochs 2 and 4 whether or not they validated best."""
    run = training.MetaTraining(config(evaluation_period=1, num_epochs=4, snapshot_every=2, save_path=str(tmp_path)),
                                quadratic)
    script_validation(run, [3.0, 2.0, 2.5, 2.2])  # epoch 2 is the best; epoch 4 is not
    after_epoch = weights_at_validations(run)
    run.run()
    saved = sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "cw.l2l-*")) if not p.endswith(".json"))
    assert saved == ["cw.l2l-0", "cw.l2l-1", "cw.l2l-2", "cw.l2l-4"]
    cell = networks.for_problem("dm", "quadratic")
    for name, epoch in (("cw.l2l-4", 4), ("cw.l2l-2", 2), ("cw.l2l-0", 2)):
        cell.set_original_weights(original_pickle.read(str(tmp_path / name)))
        for mine, expected in zip(weights(cell), after_epoch[epoch]):
            np.testing.assert_array_equal(mine, expected)


def test_the_sidecar_and_history_record_the_data_source(tiny_mnist, tmp_path):
    run = training.MetaTraining(config(problem="mnist", num_epochs=1, evaluation_period=1, save_path=str(tmp_path)),
                                tiny_mnist)
    run.run()
    assert run.history[0]["kind"] == "start" and run.history[0]["data_source"] == "given arrays"
    with open(tmp_path / "cw.l2l-0.json") as f:
        metadata = json.load(f)["metadata"]
    assert metadata["data_source"] == "given arrays" and metadata["trained_on"] == "mnist"
    assert networks.load(str(tmp_path / "cw.l2l-0")).scale == 0.01  # the metadata does not disturb loading


def test_an_interrupted_and_resumed_run_gives_exactly_the_uninterrupted_losses(quadratic, tmp_path):
    kwargs = dict(num_epochs=6, num_steps=10, unroll_length=5, evaluation_period=2, seed=11,
                  if_mt=True, mt_ratio=0.5, self_improving=True, auxiliary_decay_epochs=4)
    whole = training.MetaTraining(config(**kwargs, save_path=str(tmp_path / "whole")), quadratic)
    whole.run()

    first = training.MetaTraining(config(**kwargs, save_path=str(tmp_path / "cut")), quadratic)
    original_train_epoch = first.train_epoch

    def train_epoch():
        if first.epoch == 2:  # during epoch 3, as a user's Ctrl-C would
            os.kill(os.getpid(), signal.SIGINT)
        return original_train_epoch()

    first.train_epoch = train_epoch
    handler_before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN in a shell's background job
    with pytest.raises(errors.Interrupted, match="at epoch 3: checkpoint saved .* run the same command again"):
        first.run()
    assert signal.getsignal(signal.SIGINT) is handler_before  # the handler is put back
    resumed = training.MetaTraining(config(**kwargs, save_path=str(tmp_path / "cut")), quadratic)
    assert resumed.resumed and resumed.epoch == 3
    resumed.run()
    assert {h["kind"] for h in epochs(whole.history)} >= {"train", "imitation[adam]"}
    # every loss, decision and probability, exactly (the start record names the save path)
    assert resumed.history[1:] == whole.history[1:] and len(whole.history) > 8
    for a, b in zip(weights(resumed.cell), weights(whole.cell)):
        np.testing.assert_array_equal(a, b)


def test_resume_refuses_a_different_run_and_a_corrupt_checkpoint(quadratic, tmp_path):
    training.MetaTraining(config(num_epochs=2, save_path=str(tmp_path)), quadratic).run()
    with pytest.raises(errors.UsageError, match="--num_steps=10 there, 15 now"):
        training.MetaTraining(config(num_steps=15, save_path=str(tmp_path)), quadratic)
    for path in glob.glob(str(tmp_path / "checkpoints" / "*.index")):
        with open(path, "wb") as f:
            f.write(b"garbage")
    with pytest.raises(errors.L2OError, match="not a readable training checkpoint"):
        training.MetaTraining(config(num_epochs=2, save_path=str(tmp_path)), quadratic)


def test_the_self_improving_decay_counts_training_epochs_only(quadratic):
    run = training.MetaTraining(config(num_epochs=8, evaluation_period=100, if_mt=True, mt_ratio=0.5,
                                       self_improving=True, auxiliary_decay_epochs=4), quadratic)
    run.run()
    trained = [h for h in run.history if h["kind"] == "train"]
    assert len(trained) < 8  # some epochs imitated
    assert [h["auxiliary_probability"] for h in trained] == [
        max(0.0, 1 - i / 4) / 4 for i in range(len(trained))]


def test_tensorboard_scalars(quadratic, tmp_path):
    run = training.MetaTraining(config(num_epochs=4, evaluation_period=2, if_mt=True, mt_ratio=0.5,
                                       tensorboard_dir=str(tmp_path)), quadratic)
    run.run()
    scalars = {}
    for path in glob.glob(str(tmp_path / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    assert [step for step, _ in scalars["seconds_per_epoch"]] == [1, 2, 3, 4]
    assert [step for step, _ in scalars["validation_cost"]] == [2, 4]
    validations = [h["cost"] for h in run.history if h["kind"] == "validation"]
    assert [v for _, v in scalars["validation_cost"]] == pytest.approx(validations)
    kinds = [h["kind"] for h in epochs(run.history)]
    assert len(scalars.get("meta_loss", [])) == kinds.count("train")
    assert len(scalars.get("imitation_loss", [])) == kinds.count("imitation[adam]")
    assert {v for _, v in scalars["curriculum_stage"]} == {0.0}


def test_bad_configs_are_usage_errors():
    for overrides, message in [(dict(num_steps=4), "fewer than one unroll"), (dict(num_epochs=0), "--num_epochs"),
                               (dict(optimizers=("adamw",)), "unknown optimizer 'adamw'"),
                               (dict(if_cl=True), "--if_cl needs --save_path"),
                               (dict(mt_ratio=1.5), "--mt_ratio"), (dict(net="lstm"), "unknown network"),
                               (dict(snapshot_every=-1), "--snapshot_every must be 0"),
                               (dict(snapshot_every=5), "--snapshot_every needs --save_path"),
                               (dict(snapshot_every=5, if_cl=True, save_path="x"), "without --if_cl")]:
        with pytest.raises(errors.UsageError, match=message):
            config(**overrides).validate()
    assert config_lib.parse_names("Adam, SGD") == ("adam", "sgd")
    assert set(config_lib.BASELINE_NAMES) == set(__import__("l2o_tf.optimizers").optimizers.RULES)


def test_ctrl_c_on_the_command_line_saves_says_how_to_resume_and_exits_130(tmp_path):
    """As a user: SIGINT to a running train_dm; one line, no traceback, status 130; the same command resumes."""
    save = tmp_path / "run"
    command = [sys.executable, "-m", "l2o_tf.train_dm", f"--save_path={save}", "--problem=quadratic",
               "--num_epochs=100000", "--evaluation_period=1000", "--num_steps=20", "--seed=1"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in process.stdout:  # wait until it trains
            if "epoch 1/100000" in line:
                break
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, output
    assert "Traceback" not in output
    last = output.strip().splitlines()[-1]
    assert "checkpoint saved in" in last and "run the same command again to resume" in last
    stopped_at = int(last.split("at epoch ")[1].split(":")[0])
    assert stopped_at >= 1
    result = subprocess.run(command[:-3] + [f"--num_epochs={stopped_at + 2}", "--evaluation_period=1000",
                                            "--num_steps=20", "--seed=1"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"from epoch {stopped_at}" in result.stdout + result.stderr
    with open(save / "history.json") as f:
        assert [h["epoch"] for h in epochs(json.load(f))] == list(range(1, stopped_at + 3))
