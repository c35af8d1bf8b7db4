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
