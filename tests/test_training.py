"""The trainer as a library: MetaTraining(config, problem) built and run in-process, on tiny budgets."""
import dataclasses
import glob
import json
import logging
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
from l2o_tf import names
from l2o_tf import networks
from l2o_tf import optimizers
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
    expected = sum(runner.final_loss(runner.new_trajectory(), 10)[0] for _ in range(3))
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
    assert stage["stage"] == 1 and stage["baseline_loss_sum"] == 7.0 and stage["train_steps"] == 10
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


def test_the_starting_loss_is_the_loss_before_any_step_from_a_stream_of_its_own(tiny_mnist):
    run = training.MetaTraining(config(problem="mnist", evaluation_epochs=3), tiny_mnist)
    before = {name: rng.state.numpy().copy() for name, rng in run.rngs.items()}
    start = run.starting_loss()
    assert start == pytest.approx(np.log(10), abs=0.02)  # a sigmoid MLP at its small initial weights: a uniform guess
    runner = meta.Runner(tiny_mnist, run.cell, seeding.generator(3, "starting_loss"))  # validation's path, 0 steps
    assert start == pytest.approx(np.mean([runner.final_loss(runner.new_trajectory(), 0)[0] for _ in range(3)]),
                                  rel=1e-5)
    assert run.starting_loss() == start                   # the same optimizees every time
    for name, rng in run.rngs.items():                    # and no other stream moved
        np.testing.assert_array_equal(rng.state.numpy(), before[name])


def test_the_untrained_warning_compares_the_kept_validation_with_the_starting_loss(tiny_mnist):
    run = training.MetaTraining(config(problem="mnist", evaluation_epochs=2), tiny_mnist)
    assert run.untrained_warning() is None  # nothing validated yet
    start = run.starting_loss()
    run.curriculum.best = 2 * 0.995 * start  # validations are sums over the evaluation_epochs trajectories
    warning = run.untrained_warning()
    assert f"best validation, {0.995 * start:.4f} after 10 steps" in warning and f"({start:.4f})" in warning
    run.curriculum.best = 2 * 3 * start  # worse than not moving at all
    assert run.untrained_warning() is not None
    run.curriculum.best = 2 * 0.985 * start
    assert run.untrained_warning() is None


def test_train_logs_the_untrained_warning(quadratic, monkeypatch, caplog):
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(training.MetaTraining, "starting_loss", lambda run: 2 * run.mean_loss(run.curriculum.best))
    training.train(config(num_epochs=2), quadratic)
    assert "barely trains" not in caplog.text
    monkeypatch.setattr(training.MetaTraining, "starting_loss", lambda run: run.mean_loss(run.curriculum.best))
    training.train(config(num_epochs=2), quadratic)
    assert "this optimizer barely trains the optimizee, or makes it worse" in caplog.text


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


def test_resume_refuses_a_changed_run_naming_every_difference(quadratic, tmp_path):
    training.MetaTraining(config(num_epochs=2, save_path=str(tmp_path)), quadratic).run()  # seed 3
    with pytest.raises(errors.UsageError) as refused:
        training.MetaTraining(config(num_epochs=4, seed=1, learning_rate=0.01, num_steps_schedule=(5, 10),
                                     save_path=str(tmp_path)), quadratic)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path} holds another run: --learning_rate=0.001 there, 0.01 now; "
                              "--num_steps_schedule=[100, 200, 500, 1000, 1500, 2000, 2500, 3000] there, [5, 10] now; "
                              "--seed=3 there, 1 now; resume it with its settings (only --num_epochs, --save_path,")
    assert os.path.exists(tmp_path / "checkpoints" / "ckpt-2.index")  # the run's last; the refusal wrote none
    assert not glob.glob(str(tmp_path / "checkpoints" / "ckpt-3*"))


def test_resume_refuses_other_data(tiny_mnist, tmp_path):
    training.MetaTraining(config(problem="mnist", num_epochs=1, save_path=str(tmp_path)), tiny_mnist).run()
    real = dataclasses.replace(tiny_mnist, data_source="IDX files in /data/mnist")
    with pytest.raises(errors.UsageError, match=r"holds another run: data 'given arrays' there, 'IDX files in "
                                                r"/data/mnist' now \(--data_dir, \$L2O_DATA_DIR\); resume it"):
        training.MetaTraining(config(problem="mnist", num_epochs=2, save_path=str(tmp_path)), real)


def test_resume_takes_the_runs_seed_and_lets_length_and_outputs_change(quadratic, tmp_path):
    """No seed given: the checkpoint's, not a fresh one; --num_epochs, --checkpoint_secs, --tensorboard_dir and
    --snapshot_every may change."""
    whole = training.MetaTraining(config(num_epochs=4, save_path=str(tmp_path / "whole")), quadratic)
    whole.run()
    training.MetaTraining(config(num_epochs=2, save_path=str(tmp_path / "cut")), quadratic).run()
    resumed = training.MetaTraining(config(num_epochs=4, seed=None, checkpoint_secs=5.0, snapshot_every=1,
                                           tensorboard_dir=str(tmp_path / "tb"), save_path=str(tmp_path / "cut")),
                                    quadratic)
    assert resumed.resumed and resumed.seed == 3 and resumed.epoch == 2
    resumed.run()
    assert resumed.epoch == 4 and resumed.history[1:] == whole.history[1:]
    assert os.path.exists(tmp_path / "cut" / "cw.l2l-3") and not os.path.exists(tmp_path / "cut" / "cw.l2l-1")


def old_checkpoint(run, missing):
    """Make `run` checkpoint as older code did: its config without the fields `missing`, validation sums alone, as
    "cost" and "baseline"."""
    old_names = {"validation_loss_sum": "cost", "baseline_loss_sum": "baseline"}

    def progress_state():
        state = training.MetaTraining._progress_state(run)
        for name in missing:
            del state["config"][name]
        state["history"] = [{old_names.get(key, key): value for key, value in record.items()
                             if not key.endswith("_loss_mean")} for record in state["history"]]
        return state

    run._progress_state = progress_state
    return run


def test_an_older_checkpoint_resumes_with_defaults_for_what_it_lacks(quadratic, tmp_path, caplog):
    """A setting the checkpoint predates is its default; its history's validation sums get today's names."""
    settings = dict(if_cl=True, num_steps_schedule=(5, 10, 15), min_num_eval=2, evaluation_period=1,
                    evaluation_epochs=4, save_path=str(tmp_path))
    run = old_checkpoint(training.MetaTraining(config(num_epochs=3, **settings), quadratic),
                         missing=("k", "auxiliary_decay_epochs"))
    script_validation(run, [5.0, 6.0, 7.0, 4.5])  # improved, advance (baseline 7.0), improved
    run.run()
    with pytest.raises(errors.UsageError, match="holds another run: --k=1 there, 2 now; resume"):
        training.MetaTraining(config(num_epochs=4, k=2, **settings), quadratic)
    caplog.set_level(logging.INFO)
    resumed = training.MetaTraining(config(num_epochs=4, **settings), quadratic)
    assert resumed.resumed and resumed.epoch == 3
    assert f"the checkpoint in {tmp_path} predates --k=1, --auxiliary_decay_epochs=100: taken as the defaults" \
        in caplog.text
    validations = [h for h in resumed.history if h["kind"] == "validation"]
    assert [(h["validation_loss_mean"], h["validation_loss_sum"]) for h in validations] == [
        (1.25, 5.0), (1.5, 6.0), (1.125, 4.5)]
    (stage,) = [h for h in resumed.history if h["kind"] == "stage"]
    assert (stage["baseline_loss_mean"], stage["baseline_loss_sum"]) == (1.75, 7.0) and "baseline" not in stage


def test_a_finished_run_says_so_and_writes_nothing_until_num_epochs_is_raised(quadratic, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    training.MetaTraining(config(num_epochs=2, save_path=str(tmp_path)), quadratic).run()
    files = {p: os.stat(p).st_mtime_ns for p in glob.glob(str(tmp_path / "**"), recursive=True)}
    caplog.clear()
    again = training.MetaTraining(config(num_epochs=2, save_path=str(tmp_path)), quadratic)
    again.run()
    assert {p: os.stat(p).st_mtime_ns for p in glob.glob(str(tmp_path / "**"), recursive=True)} == files
    assert again.epoch == 2 and "resuming" not in caplog.text
    assert (f"this run has already ended (it reached epoch 2 of --num_epochs=2; a larger --num_epochs continues it); "
            f"the best model is {tmp_path / 'cw.l2l-0'}") in caplog.text
    longer = training.MetaTraining(config(num_epochs=3, save_path=str(tmp_path)), quadratic)
    longer.run()
    assert longer.epoch == 3 and [h["epoch"] for h in epochs(longer.history)] == [1, 2, 3]


def test_a_run_the_curriculum_ended_stays_ended_with_more_epochs(quadratic, tmp_path, caplog):
    run = training.MetaTraining(config(if_cl=True, num_steps_schedule=(5,), min_num_eval=1, evaluation_period=1,
                                       num_epochs=10, save_path=str(tmp_path)), quadratic)
    script_validation(run, [5.0, 6.0])  # improved, then the last (only) stage stops improving: finished
    run.run()
    assert run.finished and run.epoch == 2
    checkpoints = sorted(os.listdir(tmp_path / "checkpoints"))
    caplog.set_level(logging.INFO)
    again = training.MetaTraining(config(if_cl=True, num_steps_schedule=(5,), min_num_eval=1, evaluation_period=1,
                                         num_epochs=20, save_path=str(tmp_path)), quadratic)
    again.run()
    assert again.epoch == 2 and sorted(os.listdir(tmp_path / "checkpoints")) == checkpoints
    assert "this run has already ended (the curriculum ended it); the best model is" in caplog.text
    assert "resuming" not in caplog.text


def test_history_keeps_the_validation_mean_and_sum(quadratic, tmp_path):
    run = training.MetaTraining(config(num_epochs=2, evaluation_period=1, evaluation_epochs=4,
                                       save_path=str(tmp_path)), quadratic)
    run.run()
    with open(tmp_path / "history.json") as f:
        validations = [h for h in json.load(f) if h["kind"] == "validation"]
    assert len(validations) == 2 and all("cost" not in h for h in validations)
    for h in validations:  # a division by 4: exact
        assert h["validation_loss_mean"] * 4 == h["validation_loss_sum"] and h["validation_loss_sum"] > 0
    assert run.curriculum.best == min(h["validation_loss_sum"] for h in validations)  # the curriculum compares sums


def test_the_self_improving_decay_counts_training_epochs_only(quadratic):
    run = training.MetaTraining(config(num_epochs=8, evaluation_period=100, if_mt=True, mt_ratio=0.5,
                                       self_improving=True, auxiliary_decay_epochs=4), quadratic)
    run.run()
    trained = [h for h in run.history if h["kind"] == "train"]
    assert len(trained) < 8  # some epochs imitated
    assert [h["auxiliary_probability"] for h in trained] == [
        max(0.0, 1 - i / 4) / 4 for i in range(len(trained))]


# -- --imitation_initial_state ---------------------------------------------------------------------------------

def record_imitation_starts(run):
    """Wrap every imitator's compiled unroll to keep the state each of its unrolls starts from."""
    states = []
    for imitator in run.imitators:
        def unroll(gradients, steps, state, compiled=imitator._unroll):
            states.append([s.numpy() for s in state])
            return compiled(gradients, steps, state)

        imitator._unroll = unroll
    return states


def main_state_after_validations(run):
    """The remembered state right after each validation, and the final state of its last run replayed by a plain
    `Runner` (the quadratic's loss draws nothing, so its trajectories are the validation's own)."""
    snapshots, original = [], run.evaluate

    def evaluate():
        replay = meta.Runner(run.problem, run.cell, seeding.generator(run.seed, "validation"))
        original()
        for _ in range(run.config.evaluation_epochs):  # the first validation: a fresh generator replays it
            trajectory, _ = replay.run(replay.new_trajectory(), run.curriculum.valid_steps)
        snapshots.append(([v.numpy() for v in run.main_state.variables], [s.numpy() for s in trajectory.state]))

    run.evaluate = evaluate
    return snapshots


IMITATING_AT_1_3_5 = dict(num_epochs=5, evaluation_period=4, evaluation_epochs=2, if_mt=True, mt_ratio=0.5,
                          seed=15)  # seed 15 draws imitation, train, imitation, train, (validation), imitation


def test_main_starts_imitation_from_the_last_main_trajectorys_final_state(quadratic):
    """Zeros before any main epoch; then the final state of the preceding training epoch, or of the last run of the
    validation in between (exactly: the cell's state is already the learner's flat layout)."""
    run = training.MetaTraining(config(**IMITATING_AT_1_3_5, imitation_initial_state="main"), quadratic)
    unrolls, starts, validations = record_unrolls(run), record_imitation_starts(run), main_state_after_validations(run)
    run.run()
    assert [h["kind"] for h in run.history[1:]] == ["imitation[adam]", "train", "imitation[adam]", "train",
                                                    "validation", "imitation[adam]"]
    first, second, third = starts[0::2]  # two unrolls per epoch
    assert all(np.all(s == 0) for s in first)
    epoch_2_final = [s.numpy() for s in unrolls[1][1].state]
    assert all(np.any(s != 0) for s in epoch_2_final)
    for started, final in zip(second, epoch_2_final, strict=True):
        np.testing.assert_array_equal(started, final)
    ((remembered, replayed),) = validations
    for started, kept, final in zip(third, remembered, replayed, strict=True):
        np.testing.assert_array_equal(started, kept)
        np.testing.assert_allclose(kept, final, rtol=1e-6, atol=1e-7)
    epoch_4_final = [s.numpy() for s in unrolls[3][1].state]
    assert not np.allclose(third[0], epoch_4_final[0])  # the validation's state, not the last training epoch's


def test_zeros_starts_every_imitation_epoch_from_zeros_and_keeps_no_state(quadratic):
    run = training.MetaTraining(config(**IMITATING_AT_1_3_5), quadratic)
    starts = record_imitation_starts(run)
    run.run()
    assert run.main_state is None and len(starts) == 6
    assert all(np.all(s == 0) for s in starts[0] + starts[2] + starts[4])


def test_main_starts_rnnprops_imitation_with_its_lstm_state_and_zero_moments(quadratic):
    run = training.MetaTraining(config(net="rnnprop", num_epochs=2, evaluation_period=10, if_mt=True, mt_ratio=0.5,
                                       seed=1, imitation_initial_state="main"), quadratic)  # train, imitation
    unrolls, starts = record_unrolls(run), record_imitation_starts(run)
    run.run()
    assert [h["kind"] for h in run.history[1:]] == ["train", "imitation[adam]"]
    final, started = [s.numpy() for s in unrolls[-1][1].state], starts[0]
    assert len(final) == len(started) == 7  # h, c of two LSTMs; m, v, steps
    for part, main_part in zip(started[:4], final[:4]):
        np.testing.assert_array_equal(part, main_part)
        assert np.any(part != 0)
    assert np.any(final[4] != 0) and np.any(final[5] != 0) and np.all(final[6] == 10)  # the main epoch's moments
    assert all(np.all(part == 0) for part in started[4:])                              # are not carried


def checkpoint_names(save_path):
    return [name for name, _ in tf.train.list_variables(tf.train.latest_checkpoint(str(save_path / "checkpoints")))]


def test_a_resume_between_a_main_and_an_imitation_epoch_gives_the_same_bits(quadratic, tmp_path):
    """The remembered state travels in the checkpoint (with the self-improving mixture: its learned part)."""
    settings = dict(evaluation_period=10, if_mt=True, mt_ratio=0.5, seed=15, self_improving=True,
                    imitation_initial_state="main")  # imitation, train, imitation
    whole = training.MetaTraining(config(num_epochs=3, save_path=str(tmp_path / "whole"), **settings), quadratic)
    whole_starts = record_imitation_starts(whole)
    whole.run()
    training.MetaTraining(config(num_epochs=2, save_path=str(tmp_path / "cut"), **settings), quadratic).run()
    assert any("imitation_initial_state" in name for name in checkpoint_names(tmp_path / "cut"))
    resumed = training.MetaTraining(config(num_epochs=3, save_path=str(tmp_path / "cut"), **settings), quadratic)
    resumed_starts = record_imitation_starts(resumed)
    resumed.run()
    assert [h["kind"] for h in resumed.history[1:]] == ["imitation[adam]", "train", "imitation[adam]"]
    for started, whole_started in zip(resumed_starts[0], whole_starts[2], strict=True):
        np.testing.assert_array_equal(started, whole_started)
        assert np.any(started != 0)
    for a, b in zip(weights(resumed.cell), weights(whole.cell), strict=True):
        np.testing.assert_array_equal(a, b)


def test_zeros_checkpoints_no_state_and_an_older_checkpoint_counts_as_zeros(quadratic, tmp_path, caplog):
    settings = dict(evaluation_period=10, if_mt=True, mt_ratio=0.5, save_path=str(tmp_path))
    run = old_checkpoint(training.MetaTraining(config(num_epochs=2, **settings), quadratic),
                         missing=("imitation_initial_state",))
    run.run()
    assert not any("imitation_initial_state" in name for name in checkpoint_names(tmp_path))
    with pytest.raises(errors.UsageError, match="--imitation_initial_state='zeros' there, 'main' now"):
        training.MetaTraining(config(num_epochs=3, imitation_initial_state="main", **settings), quadratic)
    caplog.set_level(logging.INFO)
    resumed = training.MetaTraining(config(num_epochs=3, **settings), quadratic)
    assert resumed.resumed and "predates --imitation_initial_state='zeros'" in caplog.text


def test_main_refuses_several_optimizees_per_meta_step(quadratic):
    with pytest.raises(errors.UsageError, match="--imitation_initial_state=main needs one optimizee per meta-step"):
        training.MetaTraining(config(if_mt=True, imitation_initial_state="main", num_optimizees=2), quadratic)
    without_imitation = training.MetaTraining(config(imitation_initial_state="main", num_optimizees=2), quadratic)
    assert without_imitation.main_state is None  # the setting has no effect there


def test_tensorboard_scalars(quadratic, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    run = training.MetaTraining(config(num_epochs=4, evaluation_period=2, if_mt=True, mt_ratio=0.5,
                                       tensorboard_dir=str(tmp_path)), quadratic)
    run.run()
    assert caplog.text.count(f"TensorBoard summaries go to {tmp_path}: view them with `tensorboard --logdir "
                             f"{tmp_path}`") == 1
    scalars = {}
    for path in glob.glob(str(tmp_path / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    assert [step for step, _ in scalars["seconds_per_epoch"]] == [1, 2, 3, 4]
    assert [step for step, _ in scalars["validation_cost"]] == [2, 4]
    validations = [h["validation_loss_mean"] for h in run.history if h["kind"] == "validation"]
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
                               (dict(snapshot_every=5, if_cl=True, save_path="x"), "without --if_cl"),
                               (dict(imitation_initial_state="last"),
                                "unknown --imitation_initial_state='last': expected one of zeros, main")]:
        with pytest.raises(errors.UsageError, match=message):
            config(**overrides).validate()
    assert config_lib.parse_names("Adam, SGD") == ("adam", "sgd")
    assert {name.lower() for name in names.BASELINES} == set(optimizers.RULES)


def test_ctrl_c_on_the_command_line_saves_says_how_to_resume_and_exits_130(tmp_path):
    """As a user: SIGINT to a running train_dm; one line, no traceback, status 130; the same command resumes."""
    save = tmp_path / "run"
    command = [sys.executable, "-m", "l2o_tf.train_dm", f"--save_path={save}", "--problem=quadratic",
               "--num_epochs=100000", "--evaluation_period=1000", "--num_steps=5", "--unroll_length=5", "--seed=1"]
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
    result = subprocess.run(command[:-4] + [f"--num_epochs={stopped_at + 2}", "--evaluation_period=1000",
                                            "--num_steps=5", "--unroll_length=5", "--seed=1"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"from epoch {stopped_at}" in result.stdout + result.stderr
    with open(save / "history.json") as f:
        assert [h["epoch"] for h in epochs(json.load(f))] == list(range(1, stopped_at + 3))
