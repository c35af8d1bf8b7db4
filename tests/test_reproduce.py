"""run_all.sh / l2o_tf.reproduce: the configs name real flags, the plan, fast failures, and a tiny end-to-end run."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import run_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
PRESETS = ("smoke", "short", "paper", "paper_mnist")

def config_cases():
    """(entry point, flagfiles): every experiment's paper config with each preset's overrides, and the presets."""
    from l2o_tf import reproduce
    entry_points = {name: module for name, (module, _, _) in reproduce.EXPERIMENTS.items()}
    entry_points.update(tuned_baselines="l2o_tf.tune_baselines", guards="l2o_tf.evaluate_dm")
    cases = []
    for name, module in sorted(entry_points.items()):
        paper = os.path.join(CONFIGS, f"{name}.flags")
        cases.append((module, [paper]))
        cases += [(module, [paper, os.path.join(CONFIGS, p, f"{name}.flags")]) for p in PRESETS
                  if os.path.exists(os.path.join(CONFIGS, p, f"{name}.flags"))]
    cases += [("l2o_tf.reproduce", [os.path.join(CONFIGS, "presets", f"{p}.flags")]) for p in PRESETS]
    return cases


def test_every_config_file_is_used():
    used = {path for _, paths in config_cases() for path in paths}
    present = {os.path.join(root, f) for root, _, files in os.walk(CONFIGS) for f in files}
    assert present == used


@pytest.mark.parametrize("module, paths", config_cases(), ids=lambda v: v if isinstance(v, str) else
                         "+".join(os.path.relpath(p, CONFIGS) for p in v))
def test_every_config_parses_with_its_entry_point(module, paths, new_user_env):
    """absl parses the flagfiles as the run will (names and values), then exits 0 (--only_check_args)."""
    code, out = run_module(module, new_user_env, *[f"--flagfile={p}" for p in paths], "--only_check_args")
    assert code == 0, out


def test_read_flagfile(tmp_path):
    from l2o_tf import reproduce
    path = tmp_path / "x.flags"
    path.write_text("# a comment\n\n--num_steps_schedule=100 200 500\n--if_cl\n--rate=0.5\n")
    assert reproduce.read_flagfile(str(path)) == {"num_steps_schedule": "100 200 500", "if_cl": "true",
                                                  "rate": "0.5"}
    path.write_text("num_steps=3\n")
    with pytest.raises(reproduce.ReproduceError, match="expected --name=value"):
        reproduce.read_flagfile(str(path))


def test_dry_run_lists_the_plan_and_what_is_done(tmp_path, new_user_env):
    runs = tmp_path / "runs"
    code, out = run_module("l2o_tf.reproduce", new_user_env, f"--flagfile={CONFIGS}/presets/short.flags",
                           f"--configs_dir={CONFIGS}", f"--runs_dir={runs}", "--dry_run", "--allow_embedded_sample",
                           report_tensorflow=True)
    assert code == 0, out
    lines = out.splitlines()
    training = [line for line in lines if " -m l2o" in line and "tune_baselines" not in line]
    assert len(training) == 12  # 8 experiments, vanilla L2O-DM and L2O-DM-CL-IL with three training seeds
    tuning = [line for line in lines if " -m l2o_tf.tune_baselines " in line]
    assert len(tuning) == 4 and tuning[0].endswith(
        f"--flagfile={CONFIGS}/tuned_baselines.flags --flagfile={CONFIGS}/short/tuned_baselines.flags "
        f"--problem=mnist --num_steps=2000 --output_path={runs}/tune/mnist")
    assert any(f"--flagfile={CONFIGS}/dm_cl_il.flags --flagfile={CONFIGS}/short/dm_cl_il.flags "
               f"--save_path={runs}/train/dm_cl_il/seed1 --seed=1" in line for line in training)
    assert any(f"l2o_scale.metarun --flagfile={CONFIGS}/scale.flags" in line and f"--train_dir={runs}" in line
               for line in training)
    evaluations = [line for line in lines if line.startswith(("evaluate", "[done] evaluate"))]
    # 4 problems x 2 seeds x (12 trained + 4 originals + Adam + 5 tuned), and the 2 guards x 2 problems x 2 seeds
    assert len(evaluations) == 4 * 2 * 22 + 8
    assert lines[0].startswith("preset short: expected at least ")
    assert "tensorflow imported: False" in out

    (runs / "train" / "dm" / "seed1").mkdir(parents=True)
    (runs / "train" / "dm" / "seed1" / "DONE.json").write_text("{}")
    record = runs / "eval" / "mnist" / "Adam" / "seed3" / "Adam_eval_loss_record.pickle-mnist.npz"
    record.parent.mkdir(parents=True)
    record.write_bytes(b"")
    code, out = run_module("l2o_tf.reproduce", new_user_env, f"--flagfile={CONFIGS}/presets/short.flags",
                           f"--configs_dir={CONFIGS}", f"--runs_dir={runs}", "--dry_run", "--allow_embedded_sample")
    done = [line for line in out.splitlines() if line.startswith("[done]")]
    assert len(done) == 2 and "train/dm/seed1" in done[0] and done[1] == \
        "[done] evaluate Adam on mnist, seed 3, 10000 steps"


@pytest.mark.parametrize("flags, message", [
    (["--preset=fast"], "--preset must be one of smoke, short, paper, paper_mnist"),
    (["--preset=short", "--experiments=dm", "--experiment_seeds=rnnprop:1,2"], "names rnnprop, not in --experiments"),
    (["--preset=short", "--experiments=dm", "--experiment_seeds=dm:1,x"], "--experiment_seeds='dm:1,x'"),
    (["--preset=short", "--experiments=dm", "--snapshot_problems=mnist_relu"], "mnist_relu not in --problems"),
    (["--preset=short", "--experiments=dm,dm_xl"], "unknown names: dm_xl"),
    (["--preset=short", "--experiments=dm", "--problems=mnist,imagenet"], "unknown names: imagenet"),
    (["--preset=short", "--experiments=rnnprop", "--guard_problems=mnist"], "guard our trained dm"),
    (["--preset=short", "--experiments=dm", "--eval_seeds=2,x"], "--eval_seeds: expected integers"),
    (["--preset=short", "--experiments=dm", "--jobs=0"], "--jobs must be positive, got 0"),
    (["--preset=short", "--experiments=dm", "--problems=cifar_conv", "--data_dir=/nonexistent"], "cifar10"),
    (["--preset=short", "--experiments=dm", "--data_dir=/nonexistent", "--dry_run"], "/nonexistent"),
    (["--preset=paper_mnist", "--experiments=dm", "--dry_run"], "no data given, and the paper_mnist preset compares "
                                                                "with the paper: give the full MNIST with --data_dir"),
    (["--preset=short", "--experiments=dm"], "or run on the embedded 3,000-image sample with --allow_embedded_sample"),
])
def test_bad_plans_fail_in_a_line_before_tensorflow(flags, message, new_user_env):
    code, out = run_module("l2o_tf.reproduce", new_user_env, f"--configs_dir={CONFIGS}", *flags,
                           report_tensorflow=True)
    assert code == 2, out
    assert message in out and "Traceback" not in out
    assert "tensorflow imported: False" in out


def test_run_all_needs_a_preset():
    result = subprocess.run(["bash", os.path.join(REPO, "run_all.sh"), "--dry_run"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: give --preset=smoke, --preset=short, --preset=paper or "
                                     "--preset=paper_mnist")


def test_a_tiny_reproduction_end_to_end_and_its_rerun(tmp_path, new_user_env):
    """Train dm (two epochs of 10 steps), tune Adam and SGD, evaluate dm, an original model, the baselines and both
    guards on the embedded sample; results.json holds each record's numbers; a rerun does nothing."""
    configs, runs = tmp_path / "configs", tmp_path / "runs"
    shutil.copytree(CONFIGS, configs)
    (configs / "smoke" / "tuned_baselines.flags").write_text("--seeds=0\n--num_steps=30\n--learning_rates=0.1,1\n"
                                                             "--optimizers=Adam,SGD\n")
    (configs / "smoke" / "dm.flags").write_text("--num_epochs=2\n--num_steps=10\n--unroll_length=10\n"
                                                "--evaluation_period=1\n--evaluation_epochs=1\n")
    flags = ["--preset=smoke", f"--configs_dir={configs}", f"--runs_dir={runs}", "--experiments=dm",
             "--originals=dm_cl_il", "--problems=mnist", "--eval_steps=30", "--eval_seeds=2",
             "--guard_problems=mnist"]
    code, out = run_module("l2o_tf.reproduce", new_user_env, *flags, timeout=600)
    assert code == 0, out[-3000:]
    assert os.path.exists(runs / "train" / "dm" / "seed1" / "cw.l2l-0")
    tuned = json.loads((runs / "tune" / "mnist" / "tuned_mnist.json").read_text())
    assert set(tuned["chosen"]) == {"Adam", "SGD"} and tuned["num_steps"] == 30

    entries = json.loads((runs / "results.json").read_text())
    labels = {e["label"] for e in entries}
    assert labels == {"dm-t1", "original-dm_cl_il", "Adam", "Adam-tuned", "SGD-tuned", "lgl2o-dm-t1", "gl2o-dm-t1"}
    for entry in entries:
        optimizer = "L2L" if entry["label"].endswith(("-t1", "dm_cl_il")) else entry["label"].split("-")[0]
        path = runs / "eval" / "mnist" / entry["label"] / "seed2" / f"{optimizer}_eval_loss_record.pickle-mnist.npz"
        with np.load(path) as record:
            losses = record["losses"].astype(np.float64)
            settings = json.loads(str(record["flags"]))
            assert entry["steps"] == losses.size == 30
            assert entry["ln_final"] == pytest.approx(np.log(losses[-100:].mean()), rel=1e-12)
            if entry["label"] in ("Adam-tuned", "SGD-tuned"):
                assert settings["learning_rate"] == tuned["chosen"][optimizer]
            if entry["label"].startswith(("lgl2o", "gl2o")):
                assert record["learned_step"].shape == (30,)
                assert settings["guard_learning_rate"] == tuned["chosen"]["SGD"]
    assert "| dm-t1 |" in (runs / "results.md").read_text()
    done = json.loads((runs / "train" / "dm" / "seed1" / "DONE.json").read_text())
    wall = json.loads((runs / "train" / "dm" / "seed1" / "wall_time.json").read_text())
    assert done["wall_seconds"] == wall["seconds"] > 0 and done["invocations"] == wall["invocations"] == 1
    # two epochs of one 10-step unroll each, on the one horizon; the kept model is the last validation that improved
    history = json.loads((runs / "train" / "dm" / "seed1" / "history.json").read_text())
    kept = [r for r in history if r["kind"] == "validation" and r["decision"] == "improved"][-1]
    assert (f"| dm-t1 | 2 | 0 | 2 | 10 | all its epochs | {kept['validation_loss_mean']:.4f} at 10 steps (epoch "
            f"{kept['epoch']}) | ") in (runs / "results.md").read_text()
    assert os.path.exists(runs / "figures" / "mnist_dm.png")

    code, out = run_module("l2o_tf.reproduce", new_user_env, *flags, timeout=600)
    assert code == 0, out[-3000:]
    assert "== " not in out  # nothing trained, tuned or evaluated again

    table = (runs / "results.md").read_bytes()
    (runs / "results.md").unlink()
    code, out = run_module("l2o_tf.reproduce", new_user_env, *flags, "--report", timeout=600)
    assert code == 0 and "== " not in out, out[-3000:]
    assert (runs / "results.md").read_bytes() == table


def test_pending_evaluations_and_what_each_needs_first(tmp_path):
    """An optimizer's pending seeds come as one group; a group is ready when its training has finished (DONE.json),
    its tuning has written the rate (tuned baselines, guards); released models and Adam's fixed rate always are."""
    from l2o_tf import reproduce
    plan = reproduce.Plan(preset="short", runs_dir=str(tmp_path), experiments=["dm"], originals=["rnnprop"],
                          problems=["mnist", "mnist_relu"], eval_seeds=[2, 3], guard_problems=["mnist"],
                          configs_dir=CONFIGS)
    pending = plan.pending_evaluations()
    assert [(p, label) for p, label, _, _ in pending][:3] == [("mnist", "dm-t1"), ("mnist", "original-rnnprop"),
                                                             ("mnist", "Adam")]
    assert len(pending) == 2 * 8 + 2 and all(seeds == [2, 3] for *_, seeds in pending)   # 5 tuned, 2 guards on mnist
    ready = lambda: {(p, label) for p, label, what, _ in plan.pending_evaluations() if plan.ready(p, what)}
    assert ready() == {(p, label) for p in ("mnist", "mnist_relu") for label in ("original-rnnprop", "Adam")}
    (tmp_path / "tune" / "mnist").mkdir(parents=True)
    (tmp_path / "tune" / "mnist" / "tuned_mnist.json").write_text("{}")
    tuned = {("mnist", f"{name}-tuned") for name in ("Adam", "RMSProp", "SGD", "NAG", "Adagrad")}
    assert ready() == {(p, label) for p in ("mnist", "mnist_relu") for label in ("original-rnnprop", "Adam")} | tuned
    (tmp_path / "train" / "dm" / "seed1").mkdir(parents=True)
    (tmp_path / "train" / "dm" / "seed1" / "DONE.json").write_text("{}")
    assert ready() >= {("mnist", "dm-t1"), ("mnist_relu", "dm-t1"), ("mnist", "lgl2o-dm-t1"), ("mnist", "gl2o-dm-t1")}
    assert ("mnist_relu", "Adam-tuned") not in ready()
    record = plan.record_path("mnist", "dm-t1", 2, "L2L")
    os.makedirs(os.path.dirname(record))
    open(record, "wb").close()
    assert plan.pending_evaluations()[0][:2] == ("mnist", "dm-t1") and plan.pending_evaluations()[0][3] == [3]


def test_evaluate_leaves_what_another_process_holds_and_what_is_not_ready(tmp_path, monkeypatch):
    """Workers share the plan through a lock file per optimizer: one held elsewhere is skipped, as is (for a worker)
    one whose training has not finished; seeds written meanwhile are not run again."""
    from l2o_tf import evaluate
    from l2o_tf import fileio
    from l2o_tf import problems
    from l2o_tf import reproduce
    plan = reproduce.Plan(preset="short", runs_dir=str(tmp_path), experiments=["dm"], originals=["dm", "rnnprop"],
                          problems=["mnist"], eval_seeds=[2, 3], tune=False, configs_dir=CONFIGS)
    ran = []

    def run(lanes, optimizer, steps, *args, **kwargs):
        ran.append([(os.path.basename(os.path.dirname(directory)), seed) for _, _, seed, directory in lanes])
        for _, _, seed, directory in lanes:
            os.makedirs(directory, exist_ok=True)
            open(os.path.join(directory, f"{optimizer}_eval_loss_record.pickle-mnist.npz"), "wb").close()

    monkeypatch.setattr(evaluate, "run_and_record_seeds", run)
    monkeypatch.setattr(problems, "get", lambda *args, **kwargs: None)
    monkeypatch.setattr(plan, "evaluation_rules", lambda problem, base, what, seeds: ({}, None, [(None, None)] * len(seeds)))
    record = plan.record_path("mnist", "Adam", 3, "Adam")
    os.makedirs(os.path.dirname(record))
    pending = plan.pending_evaluations()
    open(record, "wb").close()   # another process wrote Adam's seed 3 after `pending` was listed
    with fileio.exclusive_lock(str(tmp_path / "eval" / "mnist" / "original-dm" / "evaluating.lock")) as held:
        assert held
        plan.evaluate(pending, only_ready=True)
    assert ran == [[("original-rnnprop", 2), ("original-rnnprop", 3)], [("Adam", 2)]]   # dm-t1 is not trained yet
    assert [label for _, label, _, _ in plan.pending_evaluations()] == ["dm-t1", "original-dm"]
    plan.evaluate(plan.pending_evaluations())   # not a worker: the untrained model is its caller's business
    assert ran[2:] == [[("dm-t1", 2), ("dm-t1", 3)], [("original-dm", 2), ("original-dm", 3)]]


def test_the_expected_time_counts_the_jobs_for_training_and_evaluation():
    from l2o_tf import reproduce
    settings = dict(preset="short", experiments=["dm", "rnnprop"], problems=["mnist", "mnist_conv"],
                    eval_seeds=[2, 3], configs_dir=CONFIGS)
    alone = reproduce.Plan(**settings).expected_seconds()
    shared = reproduce.Plan(jobs=2, **settings).expected_seconds()
    assert alone[0] > 0 and alone[1] > 0
    assert shared == pytest.approx([t * reproduce.PARALLEL_SLOWDOWN / 2 for t in alone])


def test_the_expected_time_left_leaves_out_what_is_done(tmp_path):
    from l2o_tf import reproduce
    plan = reproduce.Plan(preset="short", runs_dir=str(tmp_path), experiments=["dm", "rnnprop"], problems=["mnist"],
                          eval_seeds=[2, 3], configs_dir=CONFIGS, tune=False)
    assert plan.expected_seconds(left=True) == plan.expected_seconds()
    os.makedirs(tmp_path / "train" / "dm" / "seed1")
    (tmp_path / "train" / "dm" / "seed1" / "DONE.json").write_text("{}")
    record = plan.record_path("mnist", "Adam", "2", "Adam")
    os.makedirs(os.path.dirname(record))
    open(record, "wb").close()
    without_dm = reproduce.Plan(preset="short", runs_dir=str(tmp_path / "x"), experiments=["rnnprop"],
                                problems=["mnist"], eval_seeds=[2, 3], configs_dir=CONFIGS, tune=False)
    training, evaluation = plan.expected_seconds(left=True)
    assert training == pytest.approx(without_dm.expected_seconds()[0])
    one_evaluation = reproduce.START_SECONDS["evaluation"] + 10000 * reproduce.SECONDS_PER_EVAL_STEP["mlp"]
    assert evaluation == pytest.approx(plan.expected_seconds()[1] - one_evaluation)


def test_evaluation_progress_counts_the_records_and_estimates_the_rest(tmp_path, capsys, monkeypatch):
    from l2o_tf import reproduce
    plan = reproduce.Plan(preset="short", runs_dir=str(tmp_path), originals=["dm"], problems=["mnist"],
                          eval_seeds=[2, 3], tune=False, configs_dir=CONFIGS)
    assert plan.records_to_write() == 4   # dm and Adam, two seeds each
    clock = [1000.0]
    monkeypatch.setattr(reproduce.time, "time", lambda: clock[0])
    progress = reproduce.EvaluationProgress(plan, every=60)
    record = plan.record_path("mnist", "Adam", "2", "Adam")
    os.makedirs(os.path.dirname(record))
    open(record, "wb").close()
    clock[0] += 30
    progress()
    assert capsys.readouterr().out == ""   # not a minute yet
    clock[0] += 90
    progress()
    assert capsys.readouterr().out.endswith("evaluations: 1 of 4 records written, about 6m00s left\n")
    clock[0] += 60
    progress()
    assert capsys.readouterr().out == ""   # nothing new: no line


def test_the_pool_calls_waiting_on_while_a_job_runs(tmp_path):
    from l2o_tf import reproduce
    calls = []
    statuses = reproduce.JobPool(1).run([child(tmp_path, "a", 1.5)], waiting_on=lambda: calls.append(time.time()))
    assert statuses == [0] and 2 <= len(calls) <= 5


def test_evaluations_under_jobs_run_as_workers_with_the_plans_own_settings(tmp_path, new_user_env):
    """--jobs=2: the pending evaluations run as two worker processes (each this plan's command with
    --evaluation_worker) that share them out; their records are those of one process evaluating everything."""
    from l2o_tf import reproduce
    flags = ["--preset=smoke", f"--configs_dir={CONFIGS}", "--experiments=", "--originals=dm_cl_il",
             "--problems=mnist", "--eval_steps=20", "--eval_seeds=2,3", "--tune=false"]
    shared, single = tmp_path / "shared", tmp_path / "single"
    code, out = run_module("l2o_tf.reproduce", new_user_env, *flags, f"--runs_dir={shared}", "--jobs=2", timeout=600)
    assert code == 0, out[-3000:]
    assert "evaluate: 2 optimizers' runs in 2 processes" in out
    assert "evaluation worker 1 finished" in out and "evaluation worker 2 finished" in out
    logs = "".join((shared / "eval" / f"worker{k}.log").read_text() for k in (1, 2))
    assert logs.count("== evaluate original-dm_cl_il on mnist, seeds 2, 3") == 1   # each by one worker
    assert logs.count("== evaluate Adam on mnist, seeds 2, 3") == 1
    code, out = run_module("l2o_tf.reproduce", new_user_env, *flags, f"--runs_dir={single}", timeout=600)
    assert code == 0, out[-3000:]
    for label, optimizer in (("original-dm_cl_il", "L2L"), ("Adam", "Adam")):
        for seed in (2, 3):
            name = f"{label}/seed{seed}/{optimizer}_eval_loss_record.pickle-mnist.npz"
            with np.load(shared / "eval" / "mnist" / name) as a, np.load(single / "eval" / "mnist" / name) as b:
                np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-4)   # one thread against several
    plan = reproduce.Plan(preset="smoke", runs_dir=str(shared), jobs=2, originals=["dm_cl_il"], eval_steps=20,
                          eval_seeds=["2", "3"], tune=False, configs_dir=str(CONFIGS), experiment_seeds=["dm:1,2"])
    command = plan.worker_command()
    assert command[3:] == ["--preset=smoke", f"--runs_dir={shared}", f"--configs_dir={CONFIGS}", "--experiments=",
                           "--train_seeds=1", "--originals=dm_cl_il", "--problems=mnist", "--eval_steps=20",
                           "--eval_seeds=2,3", "--adam_learning_rate=0.01", "--tune=false", "--guard_problems=",
                           "--experiment_seeds=dm:1,2", "--snapshot_epochs=", "--snapshot_problems=",
                           "--download=false", "--allow_embedded_sample=false", "--evaluation_worker"]


def test_ctrl_c_during_training_saves_and_says_how_to_resume(tmp_path, new_user_env):
    """Ctrl-C (SIGINT to the terminal's process group) reaches the training child, which saves; the driver waits for
    it, then exits 130 with the resume line instead of killing it."""
    configs, runs = tmp_path / "configs", tmp_path / "runs"
    shutil.copytree(CONFIGS, configs)
    (configs / "smoke" / "dm.flags").write_text("--num_epochs=100000\n--num_steps=10\n--unroll_length=10\n"
                                                "--evaluation_period=1000\n")
    command = [sys.executable, "-m", "l2o_tf.reproduce", "--preset=smoke", f"--configs_dir={configs}",
               f"--runs_dir={runs}", "--experiments=dm", "--problems=mnist", "--tune=false"]
    driver = subprocess.Popen(command, env=new_user_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    lines = []
    for line in driver.stdout:  # the child's first progress line: it trains
        lines.append(line)
        if "epoch 1/100000" in line:
            break
    os.killpg(driver.pid, signal.SIGINT)
    out = "".join(lines) + driver.stdout.read()
    assert driver.wait(timeout=120) == 130, out
    assert "training dm (seed 1) was interrupted; run the same command again to resume" in out
    assert "checkpoint saved in" in out and "Traceback" not in out
    assert os.listdir(runs / "train" / "dm" / "seed1" / "checkpoints")
    assert not os.path.exists(runs / "train" / "dm" / "seed1" / "DONE.json")
    wall = json.loads((runs / "train" / "dm" / "seed1" / "wall_time.json").read_text())
    assert wall["invocations"] == 1 and wall["seconds"] > 0  # the interrupted invocation's time is kept


def test_a_trainings_row_counts_its_epochs_updates_and_stages_and_says_how_it_ended():
    """`describe_training` on scripted histories: a curriculum that moved on twice and then stopped (its kept model
    the last validation that improved), one that finished its last stage, a run of all its epochs that never
    improved, one still training."""
    from l2o_tf import reproduce

    def epochs(first, last, steps, applied, kind="train"):
        return [{"epoch": e, "kind": kind, "applied": applied, "train_steps": steps} for e in range(first, last + 1)]

    curriculum = ([{"epoch": 0, "kind": "start"}] + epochs(1, 2, 100, 5)
                  + [{"epoch": 2, "kind": "validation", "decision": "improved", "stage": 0, "steps": 200,
                      "validation_loss_mean": 0.51234}]
                  + epochs(3, 4, 100, 5)
                  + [{"epoch": 4, "kind": "validation", "decision": "advance", "stage": 1},
                     {"epoch": 4, "kind": "stage", "stage": 1, "train_steps": 200}]
                  + epochs(5, 6, 200, 10) + epochs(7, 7, 200, 10, "imitation[adam]")
                  + [{"epoch": 7, "kind": "stage", "stage": 2, "train_steps": 500}] + epochs(8, 9, 500, 25)
                  + [{"epoch": 9, "kind": "validation", "decision": "stop", "stage": 2}])
    assert reproduce.describe_training(curriculum, done=True) == [
        "9", "1", str(4 * 5 + 3 * 10 + 2 * 25), "100 → 200 (epoch 4) → 500 (epoch 7)",
        "stopped in stage 2: no validation improved", "0.5123 at 200 steps (epoch 2)"]
    finished = curriculum[:-1] + [{"epoch": 9, "kind": "validation", "decision": "finished", "stage": 2}]
    assert reproduce.describe_training(finished, done=True)[-2] == "finished its last stage (stage 2)"
    vanilla = epochs(1, 3, 100, 5) + [{"epoch": 3, "kind": "validation", "decision": "continue", "stage": 0}]
    assert reproduce.describe_training(vanilla, done=True) == ["3", "0", "15", "100", "all its epochs", "–"]
    assert reproduce.describe_training(vanilla, done=False)[-2] == "not finished"


def test_a_trainings_wall_time_adds_up_over_invocations(tmp_path):
    from l2o_tf import reproduce
    assert reproduce.add_wall_time(str(tmp_path), 30.5) == {"seconds": 30.5, "invocations": 1}
    assert reproduce.add_wall_time(str(tmp_path), 12.0) == {"seconds": 42.5, "invocations": 2}
    assert json.loads((tmp_path / reproduce.WALL_TIME).read_text()) == {"seconds": 42.5, "invocations": 2}


def test_results_table_per_training_seed_and_over_them(tmp_path):
    """Each trained optimizer's row over the evaluation seeds, and the experiment's over all its runs."""
    from l2o_tf import reproduce
    plan = reproduce.Plan(preset="short", runs_dir=str(tmp_path), experiments=["dm"], train_seeds=[1, 2],
                          problems=["mnist"], eval_seeds=[2, 3], tune=False)
    for seed, value in ((1, 0.5), (2, 0.25)):
        for eval_seed in (2, 3):
            path = plan.record_path("mnist", f"dm-t{seed}", eval_seed, "L2L")
            os.makedirs(os.path.dirname(path))
            np.savez(path, losses=np.full(600, value * eval_seed, np.float32))
    plan.summarise()
    table = (tmp_path / "results.md").read_text()
    one = np.log([1.0, 1.5])        # dm-t1: losses 0.5 x eval seed
    both = np.log([1.0, 1.5, 0.5, 0.75])
    assert f"| dm-t1 | {one.mean():.2f} ± {one.std():.2f} | {one.mean():.2f} ± {one.std():.2f} | – |" in table
    assert f"| dm (all training seeds) | {both.mean():.2f} ± {both.std():.2f} |" in table
    assert table.rstrip().endswith(f"{both.mean():.2f} ± {both.std():.2f} | 4 |")
    entries = json.loads((tmp_path / "results.json").read_text())
    assert len(entries) == 4 and {e["label"] for e in entries} == {"dm-t1", "dm-t2"}


def test_per_experiment_seeds_and_snapshot_evaluations(tmp_path):
    """--experiment_seeds gives one experiment its own training seeds; the saves after --snapshot_epochs of an
    experiment whose config sets --snapshot_every are evaluated on --snapshot_problems only."""
    from l2o_tf import reproduce
    configs = tmp_path / "configs"
    (configs / "p").mkdir(parents=True)
    for name in ("dm", "rnnprop", "tuned_baselines", "guards"):
        (configs / f"{name}.flags").write_text("--num_epochs=10\n")
    (configs / "p" / "dm.flags").write_text("--snapshot_every=5\n")
    plan = reproduce.Plan(preset="p", runs_dir=str(tmp_path / "runs"), configs_dir=str(configs),
                          experiments=["dm", "rnnprop"], train_seeds=[1], experiment_seeds=["rnnprop:1,2,3"],
                          snapshot_epochs=[5, 10], snapshot_problems=["mnist"], problems=["mnist", "mnist_relu"],
                          eval_seeds=[2], tune=False)
    assert plan.seeds_of("dm") == ["1"] and plan.seeds_of("rnnprop") == ["1", "2", "3"]
    learned = {(problem, label): what[1] for problem, label, _, what in plan.evaluations() if what[0] == "learned"}
    run = str(tmp_path / "runs" / "train")
    assert learned == {
        **{(p, "dm-t1"): f"{run}/dm/seed1/cw.l2l-0" for p in ("mnist", "mnist_relu")},
        **{(p, f"rnnprop-t{s}"): f"{run}/rnnprop/seed{s}/rp.l2l-0" for p in ("mnist", "mnist_relu") for s in (1, 2, 3)},
        ("mnist", "dm-t1-e5"): f"{run}/dm/seed1/cw.l2l-5", ("mnist", "dm-t1-e10"): f"{run}/dm/seed1/cw.l2l-10"}
    commands = [" ".join(plan.training_command(e, s)) for e in plan.experiments for s in plan.seeds_of(e)]
    assert len(commands) == 4 and commands[-1].endswith(f"--save_path={run}/rnnprop/seed3 --seed=3")


def test_figure_groups_pair_each_recipe_with_its_released_model():
    """Paper-style figures: our recipe over its training seeds beside the released one in the same colour, dashed;
    Fig. 7 with every baseline; Fig. 4 from the saves; the guards with what they guard."""
    from l2o_tf import reproduce
    labels = ["dm-t1", "dm_cl_il-t1", "dm_cl_il-t2", "rnnprop-t1", "dm-t1-e500", "dm-t1-e1000", "original-dm",
              "original-dm_cl_il", "original-rnnprop", "Adam", "Adam-tuned", "SGD-tuned", "lgl2o-dm-t1"]
    groups = reproduce.figure_groups(labels, ["dm", "dm_cl_il", "rnnprop"])
    assert set(groups) == {"dm", "rnnprop", "all", "epochs", "guards"}  # no Scale curves: no "scale" figure
    dm = {curve: (members, style) for curve, members, style in groups["dm"]}
    assert list(dm) == ["dm, ours", "dm, released", "dm_cl_il, ours", "dm_cl_il, released", "Adam-tuned"]
    assert dm["dm_cl_il, ours"][0] == ["dm_cl_il-t1", "dm_cl_il-t2"]  # one curve over both training seeds
    assert dm["dm, ours"][1] == (dm["dm, released"][1][0], "-") and dm["dm, released"][1][1] == "--"
    assert dm["dm_cl_il, ours"][1][0] == dm["dm_cl_il, released"][1][0] != dm["dm, ours"][1][0]
    assert dm["Adam-tuned"] == (["Adam-tuned"], ("black", "-"))
    assert [c for c, _, _ in groups["rnnprop"]] == ["rnnprop, ours", "rnnprop, released", "Adam-tuned"]
    assert [c for c, _, _ in groups["all"]] == ["dm, ours", "dm_cl_il, ours", "rnnprop, ours", "Adam-tuned", "Adam",
                                                "SGD-tuned"]
    styles = [style for _, _, style in groups["all"]]
    assert len(set(styles)) == len(styles) and styles[3:] == [("black", "-"), ("gray", ":"), ("C3", "--")]
    assert set(reproduce.FIGURE_TITLES) == set(groups) | {"scale"}  # every figure says what it shows
    assert [(c, m) for c, m, _ in groups["epochs"]] == [
        ("dm-t1, epoch 500", ["dm-t1-e500"]), ("dm-t1, epoch 1000", ["dm-t1-e1000"]), ("dm-t1, kept", ["dm-t1"]),
        ("original-dm", ["original-dm"])]
    assert [c for c, _, _ in groups["guards"]] == ["lgl2o-dm-t1", "dm-t1", "SGD-tuned"]
    assert set(reproduce.figure_groups(["dm-t1", "Adam"], ["dm"])) == {"dm", "all"}


def test_draw_figures_writes_each_group_from_the_records(tmp_path):
    from l2o_tf import reproduce
    plan = reproduce.Plan(preset="short", runs_dir=str(tmp_path), experiments=["dm"], train_seeds=[1, 2],
                          problems=["mnist"], eval_seeds=[2, 3], originals=["dm"], tune=False)
    for label, optimizer in (("dm-t1", "L2L"), ("dm-t2", "L2L"), ("original-dm", "L2L"), ("Adam", "Adam")):
        for eval_seed in (2, 3):
            path = plan.record_path("mnist", label, eval_seed, optimizer)
            os.makedirs(os.path.dirname(path))
            np.savez(path, losses=np.linspace(2.0, 0.1, 300, dtype=np.float32))
    plan.draw_figures()
    assert sorted(os.listdir(tmp_path / "figures")) == ["mnist_all.pdf", "mnist_all.png", "mnist_dm.pdf",
                                                         "mnist_dm.png"]


CHILD = """
import json, os, signal, sys, time
name, seconds, status = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
def saved(signum, frame):
    print(json.dumps({"name": name, "interrupted": True}), flush=True)
    sys.exit(130)
signal.signal(signal.SIGINT, saved)
start = time.time()
time.sleep(seconds)
cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
print(json.dumps({"name": name, "start": start, "end": time.time(), "cores": cores,
                  "threads": os.environ.get("TF_NUM_INTRAOP_THREADS")}), flush=True)
sys.exit(status)
"""


def child(tmp_path, name, seconds=0.0, status=0):
    return (name, [sys.executable, "-c", CHILD, name, str(seconds), str(status)], str(tmp_path / name / "train.log"))


def log_of(tmp_path, name):
    """The child's last line in its log: `<name>/train.log`, or a tuning's `<name>/tune.log`."""
    log = tmp_path / name / "train.log"
    return json.loads((log if log.exists() else tmp_path / name / "tune.log").read_text().splitlines()[-1])


def test_job_pool_runs_jobs_at_once_each_on_its_share_of_the_cores(tmp_path):
    from l2o_tf import reproduce
    pool = reproduce.JobPool(2)
    events = []
    statuses = pool.run([child(tmp_path, n, 1.0) for n in "abc"], lambda name, slot: events.append(("start", name, slot)),
                        lambda name, status, seconds: events.append(("end", name, status)))
    assert statuses == [0, 0, 0]
    assert [e[:2] for e in events[:2]] == [("start", "a"), ("start", "b")]  # two at once, in order
    assert {e[2] for e in events[:2]} == {0, 1}
    assert events[2][0] == "end" and events[3][:2] == ("start", "c")  # the third waits for a free slot
    runs = {n: log_of(tmp_path, n) for n in "abc"}
    assert runs["a"]["start"] < runs["b"]["end"] and runs["b"]["start"] < runs["a"]["end"]  # they overlapped
    assert runs["c"]["start"] >= min(runs["a"]["end"], runs["b"]["end"])
    share = max(1, len(pool.cores) // 2)
    assert all(r["threads"] == str(share) for r in runs.values())
    if runs["a"]["cores"] is not None:
        assert runs["a"]["cores"] == pool.slot_cores(events[0][2]) and len(runs["a"]["cores"]) == share
        if len(pool.cores) >= 2:
            assert not set(runs["a"]["cores"]) & set(runs["b"]["cores"])  # separate cores


def test_job_pool_slots_share_out_the_cores():
    from l2o_tf import reproduce
    assert [reproduce.JobPool(2, cores=[4, 5, 6, 7]).slot_cores(s) for s in (0, 1)] == [[4, 5], [6, 7]]
    assert [reproduce.JobPool(3, cores=[0, 1]).slot_cores(s) for s in (0, 1, 2)] == [[0], [1], [0]]
    assert reproduce.JobPool(1, cores=[0, 1]).threads == 2


def test_a_failed_training_stops_the_pool(tmp_path):
    """After a failure no new training starts and the running ones are asked to save (SIGINT)."""
    from l2o_tf import reproduce
    statuses = reproduce.JobPool(2).run([child(tmp_path, "fails", 3, 3), child(tmp_path, "long", 60),
                                              child(tmp_path, "never")])
    assert statuses == [3, 130, None]
    assert log_of(tmp_path, "long") == {"name": "long", "interrupted": True}
    assert not (tmp_path / "never").exists()


def test_train_and_tune_with_jobs_marks_the_finished_and_names_the_failed(tmp_path, monkeypatch):
    from l2o_tf import reproduce
    plan = reproduce.Plan(preset="smoke", runs_dir=str(tmp_path), experiments=["dm", "rnnprop"], jobs=2,
                          configs_dir=CONFIGS, tune=False)
    outcome = {"dm": 0, "rnnprop": 4}
    monkeypatch.setattr(plan, "training_command", lambda e, s: child(tmp_path, e, 0.2, outcome[e])[1])
    monkeypatch.setattr(plan, "worker_command", lambda: child(tmp_path, "worker", 0.1)[1])
    with pytest.raises(reproduce.ReproduceError, match=r"training rnnprop \(seed 1\) failed with exit status 4; "
                       "its output is in .*rnnprop/seed1/train.log"):
        plan.train_and_tune()
    done = json.loads((tmp_path / "train" / "dm" / "seed1" / "DONE.json").read_text())
    assert done["wall_seconds"] > 0.2
    assert not (tmp_path / "train" / "rnnprop" / "seed1" / "DONE.json").exists()
    assert log_of(tmp_path / "train" / "rnnprop", "seed1")["name"] == "rnnprop"


def test_tunings_and_evaluation_workers_run_in_the_pool_after_the_trainings(tmp_path, monkeypatch, capsys):
    """A problem's tuning is a job of the pool, queued behind the trainings: it takes the core the last training
    leaves idle. Its command is tune_baselines with the configured search, the problem's steps and its directory.
    Evaluation workers queue behind the tunings, so a core left idle evaluates what is ready meanwhile."""
    from l2o_tf import reproduce
    plan = reproduce.Plan(preset="smoke", runs_dir=str(tmp_path), experiments=["dm"], jobs=2, configs_dir=CONFIGS,
                          problems=["mnist", "mnist_conv"], eval_steps=300, conv_eval_steps=200)
    command = plan.tuning_command("mnist_conv")
    assert command[1:3] == ["-m", "l2o_tf.tune_baselines"]
    assert command[3:] == [f"--flagfile={p}" for p in plan.flagfiles("tuned_baselines")] + [
        "--problem=mnist_conv", "--num_steps=50", f"--output_path={tmp_path}/tune/mnist_conv"]
    monkeypatch.setattr(plan, "training_command", lambda e, s: child(tmp_path, e, 3.0)[1])  # room for slow starts
    monkeypatch.setattr(plan, "tuning_command", lambda p: child(tmp_path, p, 0.2)[1])
    monkeypatch.setattr(plan, "worker_command", lambda: child(tmp_path, "worker", 0.1)[1])
    os.makedirs(tmp_path / "tune" / "mnist")
    (tmp_path / "tune" / "mnist" / "tuned_mnist.json").write_text("{}")   # tuned already: not run again
    plan.train_and_tune()
    out = capsys.readouterr().out
    assert out.index("training dm (seed 1) on core(s)") < out.index("tuning mnist_conv on core(s)")
    assert "tuning mnist " not in out
    training, tuning = log_of(tmp_path / "train" / "dm", "seed1"), log_of(tmp_path / "tune", "mnist_conv")
    assert tuning["name"] == "mnist_conv" and tuning["start"] < training["end"]   # beside the training
    workers = [json.loads((tmp_path / "eval" / f"worker{k}.log").read_text()) for k in (1, 2)]
    assert tuning["end"] <= workers[0]["start"] < training["end"]   # the core the tuning left
    assert out.index("tuning mnist_conv on core(s)") < out.index("evaluation worker 1 on core(s)")
    assert "evaluation worker 2 finished" in out
