"""Reproduce the paper's comparison with our own training: `run_all.sh --preset=smoke|short|paper` runs this.

    python -m l2o_tf.reproduce --flagfile=configs/presets/short.flags [--dry_run] [--data_dir=DIR]

The plan, in order: train every experiment of `--experiments` (the entry points with `configs/<name>.flags`, the
paper's values, then `configs/<preset>/<name>.flags`, the preset's overrides, as a subprocess each: Ctrl-C saves and
a rerun resumes); tune the hand-designed baselines on every problem (`tune_baselines` with
`configs/tuned_baselines.flags`, a subprocess each, queued behind the trainings under `--jobs`); evaluate every
trained optimizer, the shipped original models of `--originals`, Adam and the tuned baselines on every problem, and
the guards around our trained L2O-DM on `--guard_problems`; collect every final number in `<runs_dir>/results.json`
and `results.md`, and draw the figures. Finished parts are skipped, so running the same command again continues.
"""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

from l2o_tf import cli
from l2o_tf import config
from l2o_tf import curriculum
from l2o_tf import errors
from l2o_tf import names
from l2o_tf import tuning

PRESETS = ("smoke", "short", "paper", "paper_mnist")
PAPER_PRESETS = ("short", "paper", "paper_mnist")  # they compare with the paper: not on the embedded sample
# experiment -> (entry point, its flag naming the output directory, the trained model inside that directory)
EXPERIMENTS = {
    **{name: ("l2o_tf.train_dm", "save_path", "cw.l2l-0") for name in ("dm", "dm_aug", "dm_cl", "dm_il", "dm_cl_il",
                                                                      "dm_si")},
    **{name: ("l2o_tf.train_rnnprop", "save_path", "rp.l2l-0") for name in ("rnnprop", "rnnprop_cl_il")},
    **{name: ("l2o_scale.metarun", "train_dir", "HierarchicalRNN_GRUCell_20_2/model.ckpt-0")
       for name in ("scale", "scale_cl_il")},
}
# For the expected time printed first: seconds per meta-training unroll of 20 steps on the MNIST MLP (L2O-Scale's
# with the validation its paper config runs every meta-iteration) and per evaluation step, measured on the 2-core
# development machine (bench/README.md, "Paper budgets"); defaults of the entry points.
SECONDS_PER_UNROLL = {"l2o_tf.train_dm": 0.31, "l2o_tf.train_rnnprop": 0.33, "l2o_scale.metarun": 0.9}
SECONDS_PER_EVAL_STEP = {"mlp": 0.004, "conv": 0.03}
START_SECONDS = {"training": 20, "evaluation": 4}  # a training process's start-up, an evaluation's tracing
# With --jobs=2 on the 2 cores each one-thread training takes this much longer than it does alone with both (bench/
# README.md, "Trainings in parallel"); the trainings' time is divided by --jobs and multiplied by this, and so is the
# evaluations' (which gain more: "Evaluations in parallel").
PARALLEL_SLOWDOWN = 1.4
# A training's exit status when stopped: 130 when it saved (Ctrl-C or SIGTERM), or killed by the signal before its
# handler was installed (still starting: nothing to save).
INTERRUPTED = (130, -signal.SIGINT, -signal.SIGTERM)
EVALUATION_INTERRUPTED = ("interrupted; run the same command again to continue (every finished tuning and "
                          "evaluation is kept)")


class ReproduceError(errors.UsageError):
    """A plan that cannot run: an unknown name, a missing config file, a failed step."""


# -- the plan (no TensorFlow) --------------------------------------------------------------------------------------

def entry_defaults(module):
    """The defaults of an entry point's flags, as flagfile text: its config's fields with the entry point's own
    defaults (`config.NET_DEFAULTS` for the two trainers)."""
    if module == "l2o_scale.metarun":
        from l2o_scale import config as scale_config
        defaults = {field.name: field.default for field in dataclasses.fields(scale_config.ScaleConfig)}
    else:
        net = "rnnprop" if module == "l2o_tf.train_rnnprop" else "dm"
        defaults = {field.name: field.default for field in dataclasses.fields(config.TrainConfig)}
        defaults.update(config.NET_DEFAULTS[net])
    return {name: " ".join(map(str, value)) if isinstance(value, tuple) else str(value)
            for name, value in defaults.items()}


def read_flagfile(path):
    """{name: value} of an absl flagfile (one --name=value per line, # comments); `--flag` alone is "true"."""
    values = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not line.startswith("--"):
                raise ReproduceError(f"{path}: expected --name=value lines, got {line!r}")
            name, sep, value = line[2:].partition("=")
            values[name] = value if sep else "true"
    return values


def parse_experiment_seeds(entries):
    """['rnnprop:1,2,3', ...] -> {'rnnprop': ['1', '2', '3'], ...} (--experiment_seeds)."""
    seeds = {}
    for entry in entries:
        name, colon, values = entry.partition(":")
        values = [v.strip() for v in values.split(",")]
        if not colon or not name.strip() or not all(v.isdigit() for v in values):
            raise ReproduceError(f"--experiment_seeds={entry!r}: expected <experiment>:<seed>,<seed>...")
        seeds[name.strip()] = values
    return seeds


def record_optimizer(what):
    return "L2L" if what[0] in ("learned", "guard") else what[1]


WALL_TIME = "wall_time.json"  # in a training's directory: its wall time summed over the driver's invocations


def add_wall_time(directory, seconds):
    """Adds one invocation's `seconds` to the training's running total in `directory`/WALL_TIME; returns the
    total ({"seconds", "invocations"}), which a resumed run would otherwise lose."""
    from l2o_tf import fileio
    path = os.path.join(directory, WALL_TIME)
    total = {"seconds": 0.0, "invocations": 0}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            total = json.load(f)
    total = {"seconds": total["seconds"] + seconds, "invocations": total["invocations"] + 1}
    fileio.atomic_write_bytes(path, json.dumps(total).encode())
    return total


def describe_training(history, done):
    """results.md's cells for one training's history.json: epochs, of which imitation, meta-updates (unrolls),
    the horizons trained on with the epoch each stage began at, how it ended (the curriculum's stop rule, its
    last stage finished, all its epochs; not finished, when not `done`), and the kept model's validation (the last
    one that improved: the model saved as the best)."""
    epochs = [r for r in history if r.get("kind") == "train" or r.get("kind", "").startswith("imitation")]
    imitation = sum(r["kind"].startswith("imitation") for r in epochs)
    horizons = [str(epochs[0]["train_steps"])] if epochs else []
    horizons += [f"{r['train_steps']} (epoch {r['epoch']})" for r in history if r.get("kind") == "stage"]
    decisions = [r for r in history if r.get("decision") in (curriculum.STOP, curriculum.FINISHED)]
    if decisions:
        last = decisions[-1]
        ended = (f"stopped in stage {last['stage']}: no validation improved" if last["decision"] == curriculum.STOP
                 else f"finished its last stage (stage {last['stage']})")
    else:
        ended = "all its epochs" if done else "not finished"
    improved = [r for r in history if r.get("kind") == "validation" and r.get("decision") == curriculum.IMPROVED
                and "validation_loss_mean" in r]
    kept = (f"{improved[-1]['validation_loss_mean']:.4f} at {improved[-1]['steps']} steps (epoch "
            f"{improved[-1]['epoch']})" if improved else "–")
    return [str(len(epochs)), str(imitation), str(sum(r.get("applied", 0) for r in epochs)),
            " → ".join(horizons) or "–", ended, kept]


FAMILIES = {"dm": "l2o_tf.train_dm", "rnnprop": "l2o_tf.train_rnnprop", "scale": "l2o_scale.metarun"}


FIGURE_TITLES = {**{family: f"{name}: our recipes (solid) and the released models (dashed)"
                    for family, name in (("dm", "L2O-DM"), ("rnnprop", "RNNprop"), ("scale", "L2O-Scale"))},
                 "all": "our recipes and the hand-designed optimizers (dashed)",
                 "epochs": "vanilla L2O-DM's saves along its training", "guards": "the guards"}


def figure_groups(labels, experiments):
    """{figure: [(curve, [evaluation labels], (colour, line style) or None for the next free colour)]}: the
    paper-style figures of one problem's evaluated `labels`. Per family of learned optimizers ("dm": the paper's
    Fig. 2 and 3, "rnnprop", "scale"): each recipe of ours over all its training seeds (solid) beside the released
    model of the same recipe (dashed, same colour), and Adam at its tuned rate (black; the fixed-rate Adam without
    tuning). "all": every recipe of ours with every baseline (Fig. 7). "epochs": a training's saves along it and its
    kept model (Fig. 4). "guards": the guards, the L2O-DM they guard and their guard optimizer. Figures with fewer
    than two curves are left out."""
    present = set(labels)
    ours = {}  # experiment -> its labels, one per training seed
    for label in labels:
        head, _, seed = label.rpartition("-t")
        if head in experiments and seed.isdigit():
            ours.setdefault(head, []).append(label)
    adam = "Adam-tuned" if "Adam-tuned" in present else "Adam"
    reference = [(adam, [adam], ("black", "-"))] if adam in present else []
    figures = {}
    for family, entry_point in FAMILIES.items():
        curves = []
        for i, recipe in enumerate(e for e in EXPERIMENTS if EXPERIMENTS[e][0] == entry_point):
            if recipe in ours:
                curves.append((f"{recipe}, ours", ours[recipe], (f"C{i % 10}", "-")))
            if f"original-{recipe}" in present:
                curves.append((f"{recipe}, released", [f"original-{recipe}"], (f"C{i % 10}", "--")))
        figures[family] = curves + reference
    # Fig. 7: ours solid, the hand-designed dashed in the colours after ours, the tuned Adam black, an untuned
    # Adam (when the tuned one is there too) gray
    figures["all"] = [(f"{recipe}, ours", members, (f"C{i % 10}", "-"))
                      for i, (recipe, members) in enumerate(ours.items())]
    baselines = [label for label in labels if label.endswith("-tuned") and label != adam]
    figures["all"] += reference
    figures["all"] += [("Adam", ["Adam"], ("gray", ":"))] if adam != "Adam" and "Adam" in present else []
    figures["all"] += [(label, [label], (f"C{(len(ours) + i) % 10}", "--")) for i, label in enumerate(baselines)]
    saves = [(label, label.rpartition("-e")) for label in labels]
    saves = [(label, head, epoch) for label, (head, _, epoch) in saves if head in present and epoch.isdigit()]
    figures["epochs"] = [(f"{head}, epoch {epoch}", [label], None) for label, head, epoch in saves]
    figures["epochs"] += [(f"{head}, kept", [head], ("black", "-")) for head in dict.fromkeys(h for _, h, _ in saves)]
    figures["epochs"] += [("original-dm", ["original-dm"], ("gray", "--"))] if saves and "original-dm" in present \
        else []
    guards = [label for label in labels if label.startswith(("lgl2o-", "gl2o-"))]
    guarded = [label for label in dict.fromkeys(g.split("-", 1)[1] for g in guards) if label in present]
    figures["guards"] = [(label, [label], None) for label in guards + guarded
                         + (["SGD-tuned"] if guards and "SGD-tuned" in present else [])]
    return {name: curves for name, curves in figures.items() if len(curves) > 1}


class JobPool:
    """Runs subprocesses (trainings, tunings, evaluation shares), at most `jobs` at a time.

    One job at a time shows each child's output and leaves TensorFlow its default threads. With several, each child
    writes to its log file and gets an equal share of the CPU cores (pinned where the OS allows, with that many
    TensorFlow threads): small models like these train and evaluate faster as several one-thread processes than as
    one process using every core (bench/README.md, "Trainings in parallel", "Evaluations in parallel"). Ctrl-C
    reaches the children from the terminal (a training saves and exits 130) and must not kill them from here;
    SIGTERM is passed on to them, on which a training saves too."""

    def __init__(self, jobs, cores=None):
        self.jobs = max(1, int(jobs))
        cores = sorted(os.sched_getaffinity(0)) if cores is None and hasattr(os, "sched_getaffinity") else cores
        self.cores = list(cores or range(os.cpu_count() or 1))
        self.threads = max(1, len(self.cores) // self.jobs)

    def slot_cores(self, slot):
        """The cores of a slot (the cores shared out in order; with more jobs than cores, slots share them)."""
        start = (slot * self.threads) % len(self.cores)
        return self.cores[start:start + self.threads]

    def start(self, command, log, slot):
        if self.jobs == 1:
            return subprocess.Popen(command)
        cores = self.slot_cores(slot)
        environment = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(self.threads),
                       "TF_NUM_INTEROP_THREADS": str(self.threads)}
        pin = (lambda: os.sched_setaffinity(0, cores)) if hasattr(os, "sched_setaffinity") else None
        os.makedirs(os.path.dirname(log), exist_ok=True)
        with open(log, "ab") as output:
            return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=environment,
                                    preexec_fn=pin)

    def run(self, jobs, started=None, ended=None, waiting_on=None):
        """Run `jobs`, [(name, command, log file)], in order; `started(name, slot)` and `ended(name, status,
        seconds)` are called as they go, and `waiting_on()` every half second while they run. After an interruption or a failure no new job starts, and after a failure
        the running ones are asked to save and stop (SIGINT); returns the exit statuses, None for jobs never
        started."""
        statuses = [None] * len(jobs)
        running = {}  # slot -> (job index, process, start time)
        waiting = list(range(len(jobs)))
        previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        signal.signal(signal.SIGINT, lambda signum, frame: None)
        signal.signal(signal.SIGTERM, lambda signum, frame: [process.send_signal(signal.SIGTERM)
                                                             for _, process, _ in running.values()])
        try:
            while waiting or running:
                while waiting and len(running) < self.jobs and all(s in (None, 0) for s in statuses):
                    index = waiting.pop(0)
                    slot = min(set(range(self.jobs)) - set(running))
                    name, command, log = jobs[index]
                    running[slot] = (index, self.start(command, log, slot), time.time())
                    if started:
                        started(name, slot)
                if not running:
                    break
                slot, (index, process, start) = self._wait_any(running, waiting_on)
                del running[slot]
                statuses[index] = process.returncode
                if ended:
                    ended(jobs[index][0], process.returncode, time.time() - start)
                if process.returncode not in (0,) + INTERRUPTED:  # interrupted ones got the signal themselves
                    for _, other, _ in running.values():
                        other.send_signal(signal.SIGINT)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return statuses

    @staticmethod
    def _wait_any(running, waiting_on=None):
        """The first of the running processes to end: (slot, (job index, process, start time))."""
        if len(running) == 1 and waiting_on is None:
            (slot, entry), = running.items()
            entry[1].wait()
            return slot, entry
        while True:
            for slot, entry in running.items():
                if entry[1].poll() is not None:
                    return slot, entry
            if waiting_on is not None:
                waiting_on()
            time.sleep(0.5)


class EvaluationProgress:
    """While the evaluation processes run: a line with the records written so far and the time left at that pace,
    every `every` seconds when the count has changed (their own progress is in their logs)."""

    def __init__(self, plan, every=300.0):
        self.plan, self.every = plan, every
        self.start, self.last = time.time(), time.time()
        self.left_at_start = plan.records_to_write()
        self.reported = self.left_at_start

    def __call__(self):
        if time.time() - self.last < self.every:
            return
        self.last = time.time()
        left = self.plan.records_to_write()
        if left != self.reported:
            self.reported = left
            written = self.left_at_start - left
            eta = (time.time() - self.start) / written * left
            print(f"== {time.strftime('%H:%M')} evaluations: {written} of {self.left_at_start} records written, "
                  f"about {names.format_duration(eta)} left", flush=True)


class Plan:
    """What `run_all.sh` runs: its settings (the flags of `--help`, same names) as attributes, and the work."""

    # the settings and their defaults; `run_all.sh`'s flags have the same names (l2o_tf.cli)
    DEFAULTS = {"preset": None, "runs_dir": None, "configs_dir": "configs", "experiments": [], "train_seeds": ["1"],
                "originals": [], "problems": ["mnist"], "eval_steps": 10000, "conv_eval_steps": None,
                "eval_seeds": ["2"], "adam_learning_rate": 0.01, "tune": True, "guard_problems": [],
                "experiment_seeds": [], "snapshot_epochs": [], "snapshot_problems": [],
                "data_dir": None, "download": False, "allow_embedded_sample": False, "dry_run": False,
                "report": False, "jobs": 1, "evaluation_worker": False}

    def __init__(self, **settings):
        unknown = set(settings) - set(self.DEFAULTS)
        if unknown:
            raise TypeError(f"unknown settings {sorted(unknown)}")
        for name, value in {**self.DEFAULTS, **settings}.items():
            setattr(self, name, value)
        self.train_seeds = [str(s) for s in self.train_seeds]
        self.snapshot_epochs = [str(e) for e in self.snapshot_epochs]
        self.seeds_by_experiment = parse_experiment_seeds(self.experiment_seeds)
        self.eval_seeds = [str(s) for s in self.eval_seeds]
        if self.preset in PRESETS:
            self.runs_dir = self.runs_dir or os.path.join("runs", self.preset)

    def seeds_of(self, experiment):
        """The training seeds of `experiment`: its `--experiment_seeds=<name>:<seed>,...` entry, else --train_seeds."""
        return self.seeds_by_experiment.get(experiment, self.train_seeds)

    def snapshots_of(self, experiment):
        """The epochs whose periodic saves (`--snapshot_every` in the experiment's config) are evaluated."""
        return self.snapshot_epochs if "snapshot_every" in self.merged_flags(experiment) else []

    def flagfiles(self, name):
        """The paper's flagfile of `name` and, when the preset has one, its overrides."""
        paper = os.path.join(self.configs_dir, f"{name}.flags")
        if not os.path.exists(paper):
            raise ReproduceError(f"no config {paper}")
        override = os.path.join(self.configs_dir, self.preset, f"{name}.flags")
        return [paper] + ([override] if os.path.exists(override) else [])

    def merged_flags(self, name):
        values = {}
        for path in self.flagfiles(name):
            values.update(read_flagfile(path))
        return values

    def data_arguments(self):
        return [f"--data_dir={self.data_dir}"] if self.data_dir else []

    def training_dir(self, experiment, seed):
        return os.path.join(self.runs_dir, "train", experiment, f"seed{seed}")

    def training_command(self, experiment, seed):
        module, output_flag, _ = EXPERIMENTS[experiment]
        return ([sys.executable, "-m", module] + [f"--flagfile={p}" for p in self.flagfiles(experiment)]
                + [f"--{output_flag}={self.training_dir(experiment, seed)}", f"--seed={seed}"] + self.data_arguments())

    def trained_model(self, experiment, seed):
        return os.path.join(self.training_dir(experiment, seed), EXPERIMENTS[experiment][2])

    def snapshot_model(self, experiment, seed, epoch):
        """The periodic save after `epoch` epochs (`<key>.l2l-<epoch>`, L2O-DM and RNNprop)."""
        return os.path.join(self.training_dir(experiment, seed), EXPERIMENTS[experiment][2][:-1] + str(epoch))

    def steps_on(self, problem):
        return self.conv_eval_steps if problem in names.CONVOLUTIONAL_PROBLEMS and self.conv_eval_steps else self.eval_steps

    def record_path(self, problem, label, seed, optimizer):
        return os.path.join(self.runs_dir, "eval", problem, label, f"seed{seed}",
                            f"{optimizer}_eval_loss_record.pickle-{problem}.npz")

    def record_of(self, problem, label, seed, what):
        """Where the evaluation of one planned (problem, label, seed, what) writes its loss record."""
        return self.record_path(problem, label, seed, record_optimizer(what))

    def evaluated(self, problem, label, seed, what):
        return os.path.exists(self.record_of(problem, label, seed, what))

    def tuning_dir(self, problem):
        return os.path.join(self.runs_dir, "tune", problem)

    def tuned_json(self, problem):
        return os.path.join(self.tuning_dir(problem), f"tuned_{problem}.json")

    def tuning_command(self, problem):
        """`tune_baselines` with the configured search, for as many steps as the problem's evaluations."""
        return ([sys.executable, "-m", "l2o_tf.tune_baselines"]
                + [f"--flagfile={p}" for p in self.flagfiles("tuned_baselines")]
                + [f"--problem={problem}", f"--num_steps={self.tuning_steps(problem)}",
                   f"--output_path={self.tuning_dir(problem)}"] + self.data_arguments())

    def check(self):
        from l2o_tf import models
        if self.preset not in PRESETS:
            raise ReproduceError(f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        unknown = [e for e in self.experiments if e not in EXPERIMENTS]
        unknown += [o for o in self.originals if o not in models.SHIPPED]
        unknown += [p for p in self.problems + self.guard_problems if p not in names.PROBLEM_DATASETS]
        if unknown:
            raise ReproduceError(f"unknown names: {', '.join(unknown)} (experiments: {', '.join(EXPERIMENTS)}; "
                                 f"originals: {', '.join(models.SHIPPED)}; "
                                 f"problems: {', '.join(names.PROBLEM_DATASETS)})")
        if self.guard_problems and "dm" not in self.experiments:
            raise ReproduceError("--guard_problems guard our trained dm: add dm to --experiments")
        for name in self.experiments + ["tuned_baselines", "guards"]:
            self.flagfiles(name)
        for flag in ("train_seeds", "eval_seeds", "snapshot_epochs"):
            try:
                [int(s) for s in getattr(self, flag)]
            except ValueError:
                raise ReproduceError(f"--{flag}: expected integers, got {','.join(getattr(self, flag))}") from None
        strays = [name for name in self.seeds_by_experiment if name not in self.experiments]
        if strays:
            raise ReproduceError(f"--experiment_seeds names {', '.join(strays)}, not in --experiments "
                                 f"({', '.join(self.experiments)})")
        unknown = [p for p in self.snapshot_problems if p not in self.problems]
        if unknown:
            raise ReproduceError(f"--snapshot_problems: {', '.join(unknown)} not in --problems")
        names.positive("eval_steps", self.eval_steps)
        names.positive("jobs", self.jobs)
        self.check_data()

    def check_data(self):
        """Every problem's data loads (before hours of training, and in a dry run); a preset that compares with the
        paper takes the embedded MNIST sample only with --allow_embedded_sample."""
        from l2o_tf import datasets
        for problem in self.problems:
            if not names.PROBLEM_DATASETS[problem]:
                continue
            data = datasets.load(names.PROBLEM_DATASETS[problem], "test", data_dir=self.data_dir,
                                 download=self.download)
            if data.is_sample and self.preset in PAPER_PRESETS and not self.allow_embedded_sample:
                raise ReproduceError(f"no data given, and the {self.preset} preset compares with the paper: give "
                                     "the full MNIST with --data_dir=DIR (or $L2O_DATA_DIR), or run on the "
                                     "embedded 3,000-image sample with --allow_embedded_sample")

    def evaluations(self):
        """[(problem, label, eval seed, what)] of every evaluation; `what` is ("learned", path), ("baseline", name,
        rate or None for the tuned one), or ("guard", guard name)."""
        runs = []
        for problem in self.problems:
            learned = [(f"{e}-t{s}", self.trained_model(e, s)) for e in self.experiments for s in self.seeds_of(e)]
            if problem in self.snapshot_problems:
                learned += [(f"{e}-t{s}-e{epoch}", self.snapshot_model(e, s, epoch)) for e in self.experiments
                            for s in self.seeds_of(e) for epoch in self.snapshots_of(e)]
            learned += [(f"original-{name}", name) for name in self.originals]
            baselines = [("Adam", ("baseline", "Adam", self.adam_learning_rate))]
            if self.tune:
                configured = self.merged_flags("tuned_baselines").get("optimizers", ",".join(names.BASELINES))
                baselines += [(f"{name}-tuned", ("baseline", name, None))
                              for name in tuning.parse_optimizers(configured)]
            for seed in self.eval_seeds:
                runs += [(problem, label, seed, ("learned", path)) for label, path in learned]
                runs += [(problem, label, seed, what) for label, what in baselines]
                if problem in self.guard_problems:
                    runs += [(problem, f"{guard}-dm-t{self.seeds_of('dm')[0]}", seed, ("guard", guard))
                             for guard in ("lgl2o", "gl2o")]
        return runs

    def planned_unrolls(self, experiment):
        """(unrolls of 20 steps, is a lower bound): a curriculum's length depends on its validations, so for one the
        count assumes every stage ends after its minimum number of validations."""
        module = EXPERIMENTS[experiment][0]
        values = {**entry_defaults(module), **self.merged_flags(experiment)}
        scale = module == "l2o_scale.metarun"
        epochs = int(values["num_meta_iterations" if scale else "num_epochs"])
        unroll = int(values.get("fix_unroll_length" if scale else "unroll_length", 20))
        if values.get("if_cl", "false").lower() not in ("true", "1"):
            return epochs * int(values["fix_num_steps" if scale else "num_steps"]) // unroll, False
        per_stage = int(values["evaluation_period"]) * int(values["min_num_eval"])
        total = 0
        for steps in curriculum.parse_schedule(values["num_steps_schedule"]):
            stage_epochs = min(epochs, per_stage)
            total, epochs = total + stage_epochs * steps // unroll, epochs - stage_epochs
        return total, True

    def expected_seconds(self, left=False):
        """(training, evaluation) seconds the plan should take on a 2-core CPU like ours: all of it, or with `left`
        what is not done yet (a training counts whole until it has finished)."""
        trainings = [e for e in self.experiments for s in self.seeds_of(e)
                     if not (left and os.path.exists(self.done_marker(e, s)))]
        training = sum(START_SECONDS["training"] + self.planned_unrolls(e)[0] * SECONDS_PER_UNROLL[EXPERIMENTS[e][0]]
                       for e in trainings)
        evaluation = sum(START_SECONDS["evaluation"] + self.steps_on(problem) * SECONDS_PER_EVAL_STEP[
            "conv" if problem in names.CONVOLUTIONAL_PROBLEMS else "mlp"] for problem, label, seed, what in
            self.evaluations() if not (left and self.evaluated(problem, label, seed, what)))
        if self.jobs > 1:  # evaluations in parallel gain at least as much (bench/README.md): the same estimate
            training, evaluation = (t * PARALLEL_SLOWDOWN / self.jobs for t in (training, evaluation))
        return training, evaluation

    def announce_expected_time(self):
        training, evaluation = self.expected_seconds()
        lower_bound = any(self.planned_unrolls(e)[1] for e in self.experiments)
        left = sum(self.expected_seconds(left=True))
        bound = "at least " if lower_bound else ""
        done = f"; left: {bound}{names.format_duration(left)}" if left < training + evaluation else ""
        print(f"preset {self.preset}: expected {bound}{names.format_duration(training + evaluation)} on a 2-core CPU "
              f"like ours (training {names.format_duration(training)}, evaluation {names.format_duration(evaluation)}"
              f"; tuning not counted){done}", flush=True)

    def print_plan(self):
        self.announce_expected_time()
        for experiment in self.experiments:
            for seed in self.seeds_of(experiment):
                done = os.path.exists(self.done_marker(experiment, seed))
                print(("[done] " if done else "") + " ".join(self.training_command(experiment, seed)))
        if self.tune:
            for problem in self.problems:
                print(("[done] " if os.path.exists(self.tuned_json(problem)) else "")
                      + " ".join(self.tuning_command(problem)))
        for problem, label, seed, what in self.evaluations():
            print(("[done] " if self.evaluated(problem, label, seed, what) else "") + f"evaluate {label} on {problem}, seed {seed}, "
                  f"{self.steps_on(problem)} steps")

    def tuning_steps(self, problem):
        configured = int(self.merged_flags("tuned_baselines").get("num_steps", self.eval_steps))
        return min(configured, self.steps_on(problem))


    # -- running it ----------------------------------------------------------------------------------------------------

    def done_marker(self, experiment, seed):
        return os.path.join(self.training_dir(experiment, seed), "DONE.json")

    def training_log(self, experiment, seed):
        """Where a training's output goes when several run at once (--jobs)."""
        return os.path.join(self.training_dir(experiment, seed), "train.log")

    def train_and_tune(self):
        """Every training, then (with --tune) every problem's tuning, not finished yet, `--jobs` at a time in plan
        order; each finished training gets DONE.json, a tuning writes its `tuned_<problem>.json` itself. Under
        `--jobs=N`, N evaluation workers queue behind them: a core the last trainings and tunings leave idle
        evaluates whatever is ready meanwhile (`ready`)."""
        from l2o_tf import fileio
        jobs = [(("train", e, s), self.training_command(e, s), self.training_log(e, s)) for e in self.experiments
                for s in self.seeds_of(e) if not os.path.exists(self.done_marker(e, s))]
        if self.tune:
            jobs += [(("tune", p), self.tuning_command(p), os.path.join(self.tuning_dir(p), "tune.log"))
                     for p in self.problems if not os.path.exists(self.tuned_json(p))]
        if jobs and self.jobs > 1 and self.pending_evaluations():
            jobs += self.worker_jobs(self.jobs)
        pool = JobPool(self.jobs)
        kinds = {"train": lambda job: f"training {job[1]} (seed {job[2]})", "tune": lambda job: f"tuning {job[1]}",
                 "evaluate": lambda job: f"evaluation worker {job[1]}"}
        named = {job: (kinds[job[0]](job), log) for job, _, log in jobs}

        progress = []  # counts the records from the first evaluation worker's start

        def started(job, slot):
            if job[0] == "evaluate" and not progress:
                progress.append(EvaluationProgress(self))
            command = " ".join(next(c for j, c, _ in jobs if j == job))
            if pool.jobs == 1:
                print(f"== {named[job][0]}: {command}", flush=True)
            else:
                print(f"== {time.strftime('%H:%M')} {named[job][0]} on core(s) "
                      f"{','.join(map(str, pool.slot_cores(slot)))}: {command}\n   its output: {named[job][1]}",
                      flush=True)

        def ended(job, status, seconds):
            if pool.jobs > 1:
                outcome = ("finished" if status == 0 else "interrupted" if status in INTERRUPTED
                           else f"failed (exit status {status})")
                print(f"== {time.strftime('%H:%M')} {named[job][0]} {outcome} after "
                      f"{names.format_duration(seconds)}", flush=True)
            if job[0] == "train" and (status == 0 or status in INTERRUPTED):
                total = add_wall_time(self.training_dir(job[1], job[2]), seconds)
                if status == 0:
                    fileio.atomic_write_bytes(self.done_marker(job[1], job[2]), json.dumps(
                        {"command": self.training_command(job[1], job[2]), "wall_seconds": total["seconds"],
                         "invocations": total["invocations"]}).encode())

        statuses = pool.run(jobs, started, ended, waiting_on=lambda: progress and progress[0]())
        failed = [(job, status) for (job, _, _), status in zip(jobs, statuses)
                  if status not in (None, 0) + INTERRUPTED]
        if failed:
            job, status = failed[0]
            where = "its output is above" if pool.jobs == 1 else f"its output is in {named[job][1]}"
            directory = {"train": lambda: self.training_dir(job[1], job[2]), "tune": lambda: self.tuning_dir(job[1]),
                         "evaluate": lambda: os.path.join(self.runs_dir, "eval")}[job[0]]()
            raise ReproduceError(f"{named[job][0]} failed with exit status {status}; {where}, its directory {directory}")
        stopped = [named[job][0] for (job, _, _), status in zip(jobs, statuses) if status in INTERRUPTED]
        waiting = sum(status is None for status in statuses)
        if stopped or waiting:
            said = f"{', '.join(stopped)} {'were' if len(stopped) > 1 else 'was'} interrupted" if stopped \
                else "interrupted"
            later = f" ({waiting} more not started)" if waiting else ""
            raise errors.Interrupted(f"{said}{later}; run the same command again to resume")

    def pending_evaluations(self):
        """[(problem, label, what, seeds not evaluated yet)] in plan order; an optimizer's seeds run as one compiled
        run (`evaluate.run_and_record_seeds`)."""
        groups = {}
        for problem, label, seed, what in self.evaluations():
            groups.setdefault((problem, label, what), []).append(seed)
        pending = [(*key, [int(s) for s in seeds if not self.evaluated(key[0], key[1], s, key[2])])
                   for key, seeds in groups.items()]
        return [entry for entry in pending if entry[3]]

    def ready(self, problem, what):
        """Whether what an evaluation needs is there: a trained model's training has finished (DONE.json), a tuned
        baseline's or a guard's tuning has written its rate; the released models and fixed rates always are."""
        needs = []
        if what[0] == "learned":
            needs += [self.done_marker(e, s) for e in self.experiments for s in self.seeds_of(e)
                      if what[1].startswith(self.training_dir(e, s) + os.sep)]
        if what[0] == "guard":
            needs.append(self.done_marker("dm", self.seeds_of("dm")[0]))
        if what[0] == "guard" or (what[0] == "baseline" and what[2] is None):
            needs.append(self.tuned_json(problem))
        return all(os.path.exists(path) for path in needs)

    def evaluate_all(self):
        """Every pending evaluation, in this process or, under `--jobs=N`, as N worker processes through the pool
        (each one thread on its own core: 1.55x faster in all on 2 cores, bench/README.md); an error if another
        process still holds some."""
        pending = self.pending_evaluations()
        workers = min(self.jobs, len(pending))
        if workers <= 1:
            self.evaluate(pending)
        else:
            self.run_workers(workers)
        left = self.pending_evaluations()
        if left:
            raise ReproduceError(f"{len(left)} optimizers' evaluations are still to do, e.g. {left[0][1]} on "
                                 f"{left[0][0]}: another process holds them (their evaluating.lock); run the same "
                                 "command again when it has finished")

    def run_workers(self, workers):
        """`workers` evaluation workers (`--evaluation_worker`) through the pool, until every one has ended."""
        print(f"== {time.strftime('%H:%M')} evaluate: {len(self.pending_evaluations())} optimizers' runs in "
              f"{workers} processes, output in {self.worker_log('<k>')}", flush=True)
        jobs = self.worker_jobs(workers)
        statuses = JobPool(self.jobs).run(jobs, ended=lambda job, status, seconds: print(
            f"== {time.strftime('%H:%M')} evaluation worker {job[1]} "
            f"{'finished' if status == 0 else 'interrupted' if status in INTERRUPTED else f'failed ({status})'} "
            f"after {names.format_duration(seconds)}", flush=True), waiting_on=EvaluationProgress(self))
        failed = [(job, status) for (job, _, _), status in zip(jobs, statuses)
                  if status not in (None, 0) + INTERRUPTED]
        if failed:
            (_, k), status = failed[0]
            raise ReproduceError(f"evaluation worker {k} failed with exit status {status}; its output is in "
                                 f"{self.worker_log(k)}")
        if any(status != 0 for status in statuses):
            raise errors.Interrupted(EVALUATION_INTERRUPTED)

    def records_to_write(self):
        """How many evaluation records (one per optimizer, problem and seed) the plan still lacks."""
        return sum(not self.evaluated(*planned) for planned in self.evaluations())

    def worker_jobs(self, workers):
        """The pool's jobs (name, command, log) for `workers` evaluation workers."""
        return [(("evaluate", k), self.worker_command(), self.worker_log(k)) for k in range(1, workers + 1)]

    def worker_log(self, k):
        return os.path.join(self.runs_dir, "eval", f"worker{k}.log")

    def worker_command(self):
        """This plan's run_all.sh command as an evaluation worker (`--evaluation_worker`)."""
        arguments = []
        for name in self.DEFAULTS:
            value = getattr(self, name)
            if name in ("jobs", "report", "dry_run", "evaluation_worker") or value is None:
                continue
            if name == "experiment_seeds":
                arguments += [f"--{name}={entry}" for entry in value]
            elif isinstance(value, (list, tuple)):
                arguments.append(f"--{name}={','.join(map(str, value))}")
            elif isinstance(value, bool):
                arguments.append(f"--{name}={str(value).lower()}")
            else:
                arguments.append(f"--{name}={value}")
        return [sys.executable, "-m", "l2o_tf.reproduce", *arguments, "--evaluation_worker"]

    def evaluate(self, pending, only_ready=False):
        """Run `pending` (`pending_evaluations`), loading each problem once. An optimizer another process is
        evaluating (its `evaluating.lock` held) is left to it, so any number of processes can share the work; with
        `only_ready`, so is one whose training or tuning has not finished (`ready`)."""
        from l2o_tf import evaluate
        from l2o_tf import fileio
        from l2o_tf import problems as problem_module
        loaded = {}
        for problem_name, label, what, _ in pending:
            if only_ready and not self.ready(problem_name, what):
                continue
            optimizer = record_optimizer(what)
            lock = os.path.join(self.runs_dir, "eval", problem_name, label, "evaluating.lock")
            with fileio.exclusive_lock(lock) as mine:
                seeds = [int(s) for s in self.eval_seeds if not self.evaluated(problem_name, label, s, what)]
                if not (mine and seeds):  # another process has it, or finished it since `pending` was listed
                    continue
                if problem_name not in loaded:
                    loaded[problem_name] = problem_module.get(problem_name, mode="test", data_dir=self.data_dir,
                                                              download=self.download)
                print(f"== evaluate {label} on {problem_name}, seed{'s' if len(seeds) > 1 else ''} "
                      f"{', '.join(map(str, seeds))}", flush=True)
                settings, guard, rules_and_problems = self.evaluation_rules(problem_name, loaded[problem_name], what,
                                                                            seeds)
                lanes = [(problem, rule, seed, os.path.dirname(self.record_path(problem_name, label, seed,
                                                                                 optimizer)))
                         for (rule, problem), seed in zip(rules_and_problems, seeds)]
                evaluate.run_and_record_seeds(lanes, optimizer, self.steps_on(problem_name), 1,
                                              {"label": label, "problem": problem_name, **settings}, guard=guard)

    def evaluation_rules(self, problem_name, base_problem, what, seeds):
        """(settings for the records, guard options or None, [(rule, problem)] per seed) of one planned optimizer:
        one rule shared by every seed, except a guard, whose objective draws from each seed's own generator."""
        from l2o_tf import guards
        from l2o_tf import models
        from l2o_tf import optimizers
        if what[0] == "learned":
            rule = models.load(what[1])
            return {"path": what[1]}, None, [(rule, base_problem)] * len(seeds)
        if what[0] == "baseline":
            rate = what[2] or tuning.tuned_learning_rate(self.tuned_json(problem_name), what[1], problem_name)
            return {"learning_rate": rate}, None, [(optimizers.get(what[1].lower(), rate), base_problem)] * len(seeds)
        guard_settings = self.merged_flags("guards")
        guard_optimizer = guard_settings.get("guard_optimizer", "SGD")
        rate = tuning.tuned_learning_rate(self.tuned_json(problem_name), guard_optimizer, problem_name)
        guard = {"guard": what[1], "guard_optimizer": guard_optimizer.lower(), "guard_learning_rate": rate,
                 "every": int(guard_settings.get("guard_every", 1)),
                 "batch": guard_settings.get("guard_batch", "fresh")}
        if what[1] == "gl2o":
            guard["mu_update"] = guard_settings.get("guard_mu_update", "ema")
        learned = models.load(self.trained_model("dm", self.seeds_of("dm")[0]))
        return {}, guard, [guards.guard_problem(base_problem, learned, seed, **guard) for seed in seeds]

    def summarise(self):
        """results.json (one entry per evaluation) and results.md (a table per problem: mean and std over seeds)."""
        import numpy as np
        from l2o_tf import fileio
        from l2o_tf import plot
        entries = []
        for problem, label, seed, what in self.evaluations():
            path = self.record_of(problem, label, seed, what)
            if not os.path.exists(path):
                continue
            losses = plot.read_losses(path)
            entries.append({"problem": problem, "label": label, "eval_seed": int(seed), "steps": int(losses.size),
                            **plot.ln_windows(losses), "finite": bool(np.all(np.isfinite(losses)))})
        fileio.atomic_write_bytes(os.path.join(self.runs_dir, "results.json"), json.dumps(entries, indent=1).encode())
        lines = [f"# Results of preset {self.preset}", ""] + self.training_table() + [
            "ln of the mean training loss over a window; mean ± std over the evaluation seeds (and the training "
            "seeds, in the rows that say so); runs: how many.", ""]
        for problem in self.problems:
            rows = [e for e in entries if e["problem"] == problem]
            if not rows:
                continue
            lines += [f"## {problem} ({rows[0]['steps']} steps)", ""] + plot.table_header()
            groups = {label: [label] for label in dict.fromkeys(e["label"] for e in rows)}
            groups.update({f"{e} (all training seeds)": [f"{e}-t{s}" for s in self.seeds_of(e)]
                           for e in self.experiments if len(self.seeds_of(e)) > 1})  # each over its training seeds
            for label, members in groups.items():
                runs = [e for e in rows if e["label"] in members]
                if not runs:
                    continue
                lines.append(f"| {label} | " + " | ".join(plot.mean_std_cells(runs)) + f" | {len(runs)} |")
            lines.append("")
        fileio.atomic_write_bytes(os.path.join(self.runs_dir, "results.md"), "\n".join(lines).encode())
        print("\n".join(lines))
        return entries

    def training_table(self):
        """results.md's table of the trainings so far (`describe_training`), with their wall times."""
        rows = []
        for experiment in self.experiments:
            for seed in self.seeds_of(experiment):
                path = os.path.join(os.path.dirname(self.trained_model(experiment, seed)), "history.json")
                if not os.path.exists(path):
                    continue
                with open(path, encoding="utf-8") as f:
                    cells = describe_training(json.load(f), os.path.exists(self.done_marker(experiment, seed)))
                wall = os.path.join(self.training_dir(experiment, seed), WALL_TIME)
                if os.path.exists(wall):
                    with open(wall, encoding="utf-8") as f:
                        total = json.load(f)
                    runs = total["invocations"]
                    cells.append(names.format_duration(total["seconds"])
                                 + (f" ({runs} invocations)" if runs > 1 else ""))
                else:
                    cells.append("–")
                rows.append(f"| {experiment}-t{seed} | " + " | ".join(cells) + " |")
        if not rows:
            return []
        return ["## Training", "", "Epochs (L2O-Scale: meta-iterations), of which imitation; meta-updates (one per "
                "unroll); the horizons trained on (optimizee steps), with the epoch at which the curriculum moved "
                "on; how the training ended; the kept model's validation (mean final loss; L2O-Scale: its validation "
                "cost) and when it was made; its wall time over every invocation of the driver (– for a training "
                "from before the driver kept it).", "",
                "| training | epochs | imitation | meta-updates | horizons | ended | kept model's validation | "
                "wall time |", "|---|---|---|---|---|---|---|---|"] + rows + [""]

    def draw_figures(self):
        """Per problem, the paper-style figures of `figure_groups` from the records written so far."""
        from l2o_tf import plot
        smooth = 50
        for problem in self.problems:
            recorded = {}
            for _, label, seed, what in (r for r in self.evaluations() if r[0] == problem):
                if self.evaluated(problem, label, seed, what):
                    recorded.setdefault(label, []).append(self.record_of(problem, label, seed, what))
            for figure, curves in figure_groups(list(recorded), self.experiments).items():
                series = [(curve, [path for label in members for path in recorded[label]])
                          for curve, members, _ in curves]
                styles = {curve: style for curve, _, style in curves if style}
                output = os.path.join(self.runs_dir, "figures", f"{problem}_{figure}.png")
                plot.plot(plot.curves(series, smooth), output, FIGURE_TITLES.get(figure, figure), smooth, styles)
                print(f"wrote {output}")

    def run(self):
        """Train, tune, evaluate, collect, draw: everything not done yet."""
        from l2o_tf import plot
        plot.require_matplotlib()  # fail now, not hours from now
        self.announce_expected_time()
        start = time.time()
        self.train_and_tune()
        try:
            self.evaluate_all()
        except KeyboardInterrupt:
            raise errors.Interrupted(EVALUATION_INTERRUPTED) from None
        self.report_results()
        print(f"preset {self.preset} finished in {names.format_duration(time.time() - start)} (this invocation); "
              f"results in {self.runs_dir}/results.json and results.md")

    def report_results(self):
        from l2o_tf import plot
        plot.require_matplotlib()
        self.summarise()
        self.draw_figures()


def check_or_print_plan(plan):
    """The fast checks; with --dry_run, the plan, and exit before TensorFlow loads."""
    plan.check()
    if plan.dry_run:
        plan.print_plan()
        sys.exit(0)


def main(plan):
    if plan.report:
        plan.report_results()
    elif plan.evaluation_worker:
        try:
            plan.evaluate(plan.pending_evaluations(), only_ready=True)
        except KeyboardInterrupt:
            raise errors.Interrupted("evaluation worker interrupted; what it finished is kept") from None
    else:
        plan.run()


if __name__ == "__main__":
    cli.define_reproduce_flags(Plan.DEFAULTS, PRESETS, EXPERIMENTS)
    cli.run(lambda: main(Plan(**cli.flag_values(Plan.DEFAULTS))),
            check=lambda: check_or_print_plan(Plan(**cli.flag_values(Plan.DEFAULTS))))
