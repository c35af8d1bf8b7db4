"""tuning and tune_baselines: the choice against runs of the evaluation harness, the tuned-rate file, the entry point."""
import json
import math

import numpy as np
import pytest

from l2o_tf import cli
from l2o_tf import evaluate
from l2o_tf import optimizers
from l2o_tf import problems
from l2o_tf import tuning

from conftest import run_module


def test_final_loss_is_the_window_mean_and_a_diverged_run_never_wins():
    assert tuning.final_loss([5.0, 4.0, 2.0, 1.0], 2) == 1.5
    assert tuning.final_loss([5.0, np.nan, 2.0, 1.0], 2) == math.inf


def test_tune_picks_the_rate_with_the_lowest_mean_final_loss():
    problem = problems.get("quadratic")
    rates, seeds = [1e-4, 0.01, 10.0], [0, 1]   # 10 diverges: only the first two are re-run below
    results = tuning.tune(problem, ["SGD"], rates, seeds, num_steps=30, window=5)
    chosen, finals, runs = results["SGD"]
    want = {rate: np.mean([tuning.final_loss(evaluate.evaluate(problem, optimizers.SGD(rate), 30, 1, s), 5)
                           for s in seeds]) for rate in rates[:2]}
    assert finals[10.0] == math.inf                     # SGD at 10 diverges on the quadratic
    for rate in rates[:2]:
        assert finals[rate] == pytest.approx(want[rate], rel=1e-6)
    assert chosen == min(want, key=want.get) == 0.01
    assert sorted(runs) == seeds and all(len(r) == 30 for r in runs.values())


def test_a_stopped_search_resumes_with_only_its_missing_runs(tmp_path, monkeypatch):
    problem = problems.get("quadratic")
    rates, seeds = [1e-3, 0.01, 0.1], [0, 1]
    whole = tuning.tune(problem, ["SGD", "Adam"], rates, seeds, num_steps=20, window=5)
    resume = tuning.partial_path(str(tmp_path), problem.name)

    class Stop(Exception):
        pass

    def stop_after_four(name, rate, loss):
        if (name, rate) == ("Adam", 1e-3):
            raise Stop
    with pytest.raises(Stop):
        tuning.tune(problem, ["SGD", "Adam"], rates, seeds, 20, 5, stop_after_four, resume_path=resume)
    evaluated = []
    real = evaluate.evaluate_runs
    monkeypatch.setattr(evaluate, "evaluate_runs", lambda runs, *a: evaluated.append(runs[0][1]) or real(runs, *a))
    resumed = tuning.tune(problem, ["SGD", "Adam"], rates, seeds, 20, 5, resume_path=resume)
    assert [type(rule).__name__ for rule in evaluated] == ["Adam", "Adam"]    # 4 of 6 runs were kept
    for name in ("SGD", "Adam"):
        assert resumed[name][:2] == whole[name][:2]   # the chosen rate and every rate's final loss, exactly
        for seed in seeds:
            np.testing.assert_array_equal(resumed[name][2][seed], whole[name][2][seed])
    tuning.save(resumed, problem, rates, seeds, 20, 5, str(tmp_path))
    assert not (tmp_path / f"tuning_{problem.name}.partial.npz").exists()   # complete: nothing left to resume


def test_a_search_with_other_settings_does_not_resume(tmp_path, capsys):
    problem = problems.get("quadratic")
    resume = tuning.partial_path(str(tmp_path), problem.name)
    tuning.tune(problem, ["SGD"], [0.01], [0], 20, 5, resume_path=resume)
    other = tuning.tune(problem, ["SGD"], [0.01], [0], 30, 5, resume_path=resume)   # more steps: runs again
    assert len(other["SGD"][2][0]) == 30 and "other settings: starting afresh" in capsys.readouterr().out
    (tmp_path / f"tuning_{problem.name}.partial.npz").write_bytes(b"not an npz")
    assert tuning.tune(problem, ["SGD"], [0.01], [0], 20, 5, resume_path=resume)["SGD"][0] == 0.01
    assert "unreadable" in capsys.readouterr().out


def test_flag_parsing():
    assert tuning.parse_optimizers("sgd, Adam,SGD") == ["SGD", "Adam"]
    assert tuning.parse_numbers("learning_rates", "0.1,1,0.1", float) == [0.1, 1.0]
    with pytest.raises(cli.UsageError, match="unknown LBFGS"):
        tuning.parse_optimizers("Adam,LBFGS")
    with pytest.raises(cli.UsageError, match="positive"):
        tuning.parse_numbers("learning_rates", "0.1,-1", float)
    with pytest.raises(cli.UsageError, match="comma-separated ints"):
        tuning.parse_numbers("seeds", "1,x", int)


def test_tuned_learning_rate_file(tmp_path):
    path = tmp_path / "tuned_mnist.json"
    path.write_text(json.dumps({"problem": "mnist", "chosen": {"SGD": 0.3, "Adam": None}}))
    assert tuning.tuned_learning_rate(str(path), "sgd", "mnist") == 0.3
    with pytest.raises(tuning.TunedRateError, match="not on 'mnist_relu'"):
        tuning.tuned_learning_rate(str(path), "sgd", "mnist_relu")
    with pytest.raises(tuning.TunedRateError, match="no tuned rate for Adam"):
        tuning.tuned_learning_rate(str(path), "Adam")
    with pytest.raises(tuning.TunedRateError, match="no such"):
        tuning.tuned_learning_rate(str(tmp_path / "none.json"), "sgd")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(tuning.TunedRateError, match="not a tune_baselines JSON"):
        tuning.tuned_learning_rate(str(tmp_path / "bad.json"), "sgd")


def test_entry_point_writes_the_rates_and_records(tmp_path, new_user_env):
    code, output = run_module("l2o_tf.tune_baselines", new_user_env, "--problem=quadratic", "--optimizers=Adam",
                              "--learning_rates=0.001,0.01", "--seeds=3", "--num_steps=20", "--final_window=5",
                              f"--output_path={tmp_path}")
    assert code == 0, output
    with open(tmp_path / "tuned_quadratic.json") as f:
        report = json.load(f)
    assert report["problem"] == "quadratic" and report["seeds"] == [3]
    for name in ("Adam",):
        finals = report["final_loss"][name]
        assert report["chosen"][name] == float(min(finals, key=finals.get))
        with np.load(tmp_path / name / "seed3" / f"{name}_eval_loss_record.pickle-quadratic.npz") as data:
            assert data["losses"].shape == (20,)


@pytest.mark.parametrize("flag, message", [
    ("--optimizers=Adam,Foo", "--optimizers: unknown Foo"),
    ("--learning_rates=0.1,abc", "--learning_rates"),
    ("--num_steps=0", "--num_steps must be positive"),
    ("--problem=mnist_huge", "unknown --problem"),
])
def test_bad_flags_are_one_line_errors(flag, message, new_user_env):
    code, output = run_module("l2o_tf.tune_baselines", new_user_env, flag)
    lines = [line for line in output.strip().splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and message in lines[0], output


def test_help_lists_the_flags(new_user_env):
    code, output = run_module("l2o_tf.tune_baselines", new_user_env, "--help")
    assert code == 0
    for flag in ("--optimizers", "--learning_rates", "--seeds", "--num_steps", "--final_window", "--problem"):
        assert flag in output
