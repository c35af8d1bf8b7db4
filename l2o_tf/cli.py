"""The command-line layer every absl entry point shares: flags, checks of flags and data, one-line errors.

It imports no TensorFlow: the entry point checks its flags and finds its data first, so bad input is reported
within a second or two, and only then loads the modules that do the work.
"""
import contextlib
import dataclasses
import json
import os
import re
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging
from absl.logging import converter

from l2o_tf import config
from l2o_tf import curriculum
from l2o_tf import datasets
from l2o_tf import errors
from l2o_tf import models
from l2o_tf import names
from l2o_tf import original_pickle
from l2o_tf import tuning

FLAGS = flags.FLAGS
UsageError = errors.UsageError


def define_data_flags():
    flags.DEFINE_string("data_dir", None, "Directory with the raw dataset files (IDX .gz for MNIST, CIFAR-10 "
                        "batches) or a prepared TFDS directory; defaults to $L2O_DATA_DIR. Without either, MNIST "
                        "problems use a small embedded sample of MNIST (with a warning); a location given without "
                        "the data is an error.")
    flags.DEFINE_bool("download", False, "Allow a TFDS download when no local data is found (needs network).")


def define_evaluation_flags(rnnprop=False):
    """The original `evaluate_*.py` flags; `--optimizer` also takes the hand-designed baselines."""
    flags.DEFINE_string("optimizer", "L2L", f"L2L (a learned optimizer from --path) or one of {', '.join(names.BASELINES)} "
                        "(any case).")
    flags.DEFINE_string("problem", "mnist", f"Optimizee problem: {', '.join(names.PROBLEM_DATASETS)} (the "
                        "original's default 'simple' is not a paper problem).")
    flags.DEFINE_string("path", None, "Learned optimizer: a weights file (e.g. runs/dm/cw.l2l-0), a directory "
                        "holding one, or the name of a shipped original model (e.g. dm_cl_il).")
    flags.DEFINE_string("output_path", "out", "Directory for the loss record.")
    flags.DEFINE_integer("num_epochs", 1, "Repeated runs; like the original, later epochs continue the trajectory.")
    flags.DEFINE_integer("num_steps", 10000, "Optimizee steps per epoch.")
    flags.DEFINE_float("learning_rate", 0.001, "Learning rate of a hand-designed --optimizer.")
    flags.DEFINE_integer("seed", None, "Seed of the optimizee init and minibatches; none = a fresh one, logged.")
    if rnnprop:
        define_rnnprop_flags()
    flags.DEFINE_string("guard", None, "lgl2o or gl2o: guard the optimizer with --guard_optimizer (l2o_tf.guards); "
                        "the .npz then also records, per step, whether the learned step was taken.")
    flags.DEFINE_string("guard_optimizer", "SGD", f"The guard's optimizer: one of {', '.join(names.BASELINES)}.")
    flags.DEFINE_string("guard_learning_rate", None, "The guard optimizer's learning rate: a number, or "
                        "tuned:<json written by python -m l2o_tf.tune_baselines>.")
    flags.DEFINE_integer("guard_every", 1, "Decide every this many steps; the choice is kept in between.")
    flags.DEFINE_string("guard_batch", "fresh", "Compare the candidates on a fresh minibatch or the step's own.")
    flags.DEFINE_string("guard_mu_update", "ema", "GL2O's mu update: ema, geometric, recent or max.")
    flags.DEFINE_string("guard_learned_state", "advance", "The learned optimizer's state when the guard's step is "
                        "taken: advance (as if its own step had been taken), keep (as before the step) or reset (its "
                        "initial state).")
    define_data_flags()


def guard_options():
    """The --guard flags as keyword arguments of `guards.guard_problem`, checked without TensorFlow; None without
    --guard."""
    if FLAGS.guard is None:
        return None
    guard = FLAGS.guard.lower()
    checks = {"guard": (guard, names.GUARDS), "guard_batch": (FLAGS.guard_batch, names.GUARD_BATCHES),
              "guard_mu_update": (FLAGS.guard_mu_update, names.GUARD_MU_UPDATES),
              "guard_learned_state": (FLAGS.guard_learned_state, names.GUARD_LEARNED_STATES)}
    for flag, (value, allowed) in checks.items():
        if value not in allowed:
            raise UsageError(f"unknown --{flag}={value!r}: expected one of {', '.join(allowed)}")
    names.positive("guard_every", FLAGS.guard_every)
    optimizer = names.baseline_name(FLAGS.guard_optimizer, "guard_optimizer")
    rate = FLAGS.guard_learning_rate
    if rate is None:
        raise UsageError("--guard needs --guard_learning_rate: a number, or tuned:<json of tune_baselines>")
    if rate.startswith("tuned:"):
        rate = tuning.tuned_learning_rate(rate[len("tuned:"):], optimizer, FLAGS.problem)
    else:
        try:
            rate = float(rate)
        except ValueError:
            raise UsageError(f"--guard_learning_rate must be a number or tuned:<json>, got {rate!r}") from None
    options = {"guard": guard, "guard_optimizer": optimizer.lower(),
               "guard_learning_rate": names.positive("guard_learning_rate", rate), "every": FLAGS.guard_every,
               "batch": FLAGS.guard_batch, "learned_state": FLAGS.guard_learned_state}
    if guard == "gl2o":
        options["mu_update"] = FLAGS.guard_mu_update
    return options


def define_training_flags(net):
    """The original flags with the original defaults of `net`'s trainer ("dm" or "rnnprop": they differ only in
    `config.NET_DEFAULTS` and RNNprop's cell flags)."""
    defaults = config.NET_DEFAULTS[net]
    flags.DEFINE_string("save_path", None, "Directory for the saved optimizers, checkpoint and history.")
    flags.DEFINE_integer("num_epochs", 10000, "Number of training epochs (optimizee trajectories).")
    flags.DEFINE_integer("evaluation_period", defaults["evaluation_period"], "Validate every this many epochs.")
    flags.DEFINE_integer("evaluation_epochs", 20, "Trajectories per validation (their final losses are summed).")
    flags.DEFINE_integer("num_steps", 100, "Optimizee steps per epoch without curriculum.")
    flags.DEFINE_integer("unroll_length", 20, "Steps per meta-update (truncated backpropagation length).")
    flags.DEFINE_float("learning_rate", 0.001, "Learning rate of the meta-optimizer (Adam).")
    flags.DEFINE_bool("second_derivatives", False, "Backpropagate through the optimizee gradients.")
    flags.DEFINE_string("problem", "mnist", "Optimizee problem to train on.")
    flags.DEFINE_bool("if_scale", False, "Random scaling of the optimizee's coordinates per epoch.")
    flags.DEFINE_float("rd_scale_bound", 3.0, "Random scaling factor exp(U(-b, b)).")
    flags.DEFINE_bool("if_cl", False, "Curriculum learning over --num_steps_schedule.")
    flags.DEFINE_string("num_steps_schedule", " ".join(map(str, curriculum.DEFAULT_SCHEDULE)),
                        "Curriculum training lengths; stage i validates at the length of stage i+1.")
    flags.DEFINE_integer("min_num_eval", 3, "Minimum validations per curriculum stage.")
    flags.DEFINE_bool("if_mt", False, "Imitation learning of hand-designed optimizers (the original 'multi-task').")
    flags.DEFINE_integer("num_mt", 1, "Number of imitation tasks; task i imitates the i-th of --optimizers.")
    flags.DEFINE_string("optimizers", "adam", "Comma-separated teachers: adam, rmsprop, nag, sgd, adagrad.")
    flags.DEFINE_float("mt_ratio", 0.3, "Probability of an imitation epoch without curriculum.")
    flags.DEFINE_string("mt_ratios", " ".join(map(str, defaults["mt_ratios"])), "Imitation probability per "
                        "curriculum stage (last one reused).")
    flags.DEFINE_integer("k", 1, "Teacher steps per recorded imitation step.")
    flags.DEFINE_string("imitation_initial_state", "zeros", "Where each imitation epoch's learner state starts: zeros, "
                        "or main (the original's: the state at the end of the latest training epoch or validation "
                        "run; for RNNprop its LSTM part, with zero moments).")
    flags.DEFINE_bool("self_improving", False, "Mix auxiliary optimizers' steps into training (paper's §4.2).")
    flags.DEFINE_string("auxiliary_optimizers", "adam,sgd,adagrad", "Self-improving auxiliaries.")
    flags.DEFINE_integer("auxiliary_decay_epochs", 100, "Epochs over which auxiliary probabilities decay to 0.")
    flags.DEFINE_integer("seed", None, "Seed of every random draw; none = a fresh one, logged and checkpointed "
                         "(resuming: the run's own).")
    flags.DEFINE_integer("snapshot_every", 0, "Also keep the weights after every this many epochs as "
                         "<key>.l2l-<epoch>, improved or not (the paper's Fig. 4); 0: only the original's saves.")
    flags.DEFINE_integer("checkpoint_secs", 60, "Also checkpoint at the end of an epoch after this many seconds "
                         "(and always at each validation and on Ctrl-C).")
    flags.DEFINE_string("tensorboard_dir", None, "Write meta-loss, imitation loss, validation cost, curriculum stage "
                        "and seconds per epoch here as TensorBoard scalars.")
    define_distribute_flags()
    if net == "rnnprop":
        define_rnnprop_flags()
    define_data_flags()


def define_rnnprop_flags():
    """RNNprop's cell settings (`cell_flags`), in its training and its evaluation alike."""
    flags.DEFINE_float("beta1", 0.95, "RNNprop input feature beta1.")
    flags.DEFINE_float("beta2", 0.95, "RNNprop input feature beta2.")


def define_distribute_flags():
    """--strategy and --num_optimizees (l2o_tf.distribute), for every meta-training entry point."""
    flags.DEFINE_string("strategy", "default", "Where meta-training runs: default (one device), mirrored (every "
                        "local GPU), multi_worker (the cluster in $TF_CONFIG); see the README's 'Scaling out'.")
    flags.DEFINE_integer("num_optimizees", None, "Optimizees per meta-step over all replicas, their meta-gradients "
                         "averaged; a multiple of the replicas. Default: one per replica (1 on one device).")


def define_reproduce_flags(defaults, presets, experiments):
    """`run_all.sh`'s flags (l2o_tf.reproduce), with the defaults of its `Plan`."""
    flags.DEFINE_string("preset", defaults["preset"], f"One of {', '.join(presets)}: names configs/<preset>/ (the "
                        "preset's overrides of the paper's values); run_all.sh passes configs/presets/<preset>.flags.")
    flags.DEFINE_string("runs_dir", defaults["runs_dir"], "Where every run's outputs go (default runs/<preset>).")
    flags.DEFINE_string("configs_dir", defaults["configs_dir"], "The experiments' flagfiles.")
    flags.DEFINE_list("experiments", defaults["experiments"], "Experiments to train: some of "
                      f"{', '.join(experiments)}.")
    flags.DEFINE_list("train_seeds", defaults["train_seeds"], "Training seeds: every experiment is trained once per "
                      "seed.")
    flags.DEFINE_multi_string("experiment_seeds", defaults["experiment_seeds"], "<experiment>:<seed>,<seed>...: "
                              "that experiment's training seeds instead of --train_seeds (repeat for several).")
    flags.DEFINE_list("snapshot_epochs", defaults["snapshot_epochs"], "Evaluate the periodic saves after these epochs "
                      "of every experiment whose config sets --snapshot_every (the paper's Fig. 4).")
    flags.DEFINE_list("snapshot_problems", defaults["snapshot_problems"], "Problems on which those saves are "
                      "evaluated.")
    flags.DEFINE_list("originals", defaults["originals"], "Shipped original models to evaluate beside ours "
                      "(l2o_tf.models.SHIPPED).")
    flags.DEFINE_list("problems", defaults["problems"], "Problems to evaluate on (CIFAR ones need the data).")
    flags.DEFINE_integer("eval_steps", defaults["eval_steps"], "Optimizee steps of every evaluation.")
    flags.DEFINE_integer("conv_eval_steps", defaults["conv_eval_steps"], "Steps on convolutional problems (default "
                         "--eval_steps).")
    flags.DEFINE_list("eval_seeds", defaults["eval_seeds"], "Evaluation seeds (the original evaluates with seed 2).")
    flags.DEFINE_float("adam_learning_rate", defaults["adam_learning_rate"], "Adam's rate beside the learned "
                       "optimizers (the README's).")
    flags.DEFINE_bool("tune", defaults["tune"], "Tune the baselines (configs/tuned_baselines.flags) on every problem "
                      "and evaluate them at their chosen rates.")
    flags.DEFINE_list("guard_problems", defaults["guard_problems"], "Problems on which LGL2O and GL2O guard our "
                      "trained dm (configs/guards.flags; SGD at its tuned rate).")
    flags.DEFINE_bool("allow_embedded_sample", defaults["allow_embedded_sample"], "Let the short and paper presets "
                      "run on the embedded 3,000-image MNIST sample when no data is given (they refuse it otherwise: "
                      "its results are not comparable with the paper's; smoke always takes it).")
    flags.DEFINE_bool("dry_run", defaults["dry_run"], "Print the plan (and what is done already) and exit, after "
                      "the same checks of the flags and the data as a real run.")
    flags.DEFINE_integer("jobs", defaults["jobs"], "Trainings, tunings and evaluation processes run at once, each on "
                         "its share of the CPU cores with its output in a log file (2 on 2 cores trains about 1.4x "
                         "and evaluates about 1.55x faster in all than one at a time).")
    flags.DEFINE_bool("evaluation_worker", defaults["evaluation_worker"], "Only evaluate, nothing else: every "
                      "evaluation still to do whose training or tuning has finished, one optimizer at a time, leaving "
                      "those another process is running to it (--jobs=n starts n of these; more may join from "
                      "another terminal).")
    flags.DEFINE_bool("report", defaults["report"], "Only collect results.json / results.md and draw the figures "
                      "from the runs finished so far (nothing is trained or evaluated).")
    define_data_flags()


def flag_values(flag_names):
    """{name: value} of the flags `flag_names`: an entry point's settings for a library object."""
    return {name: FLAGS[name].value for name in flag_names}


def cell_flags():
    """The learned optimizer's config flags this entry point defines (RNNprop's --beta1, --beta2)."""
    return {name: FLAGS[name].value for name in ("beta1", "beta2") if name in FLAGS}


def training_config(net):
    """The training flags as a checked `config.TrainConfig` (no TensorFlow); a bad value is a `UsageError`."""
    fields = {f.name for f in dataclasses.fields(config.TrainConfig)}
    values = {name: FLAGS[name].value for name in fields if name in FLAGS}
    values.update(net=net, cell=cell_flags(),
                  num_steps_schedule=config.parse_schedule(FLAGS.num_steps_schedule),
                  mt_ratios=config.parse_ratios(FLAGS.mt_ratios),
                  optimizers=config.parse_names(FLAGS.optimizers),
                  auxiliary_optimizers=config.parse_names(FLAGS.auxiliary_optimizers),
                  checkpoint_secs=float(FLAGS.checkpoint_secs))
    return config.TrainConfig(**values).validate()


def training_main(net):
    """`train_dm` / `train_rnnprop` after the fast checks: the flags into `training.train` for `net` ("dm" or
    "rnnprop")."""
    from l2o_tf import distribute, training  # TensorFlow loads here, after the flags and the data were checked
    train_config = training_config(net)
    distribute.strategy_named(train_config.strategy)  # before any TensorFlow op: a cluster's must exist first
    training.train(train_config, make_problem(mode="train"))


def check_problem_and_data(mode):
    """Fail fast on an unknown --problem or missing data; returns the loaded split (a `datasets.Dataset`, cached for
    the problem; `.is_sample` and `.source` say where it came from), or None for a problem without data."""
    if FLAGS.problem not in names.PROBLEM_DATASETS:
        raise UsageError(f"unknown --problem={FLAGS.problem!r}: expected one of "
                         f"{', '.join(names.PROBLEM_DATASETS)}")
    name = names.PROBLEM_DATASETS[FLAGS.problem]
    if name is None:
        return None
    return datasets.load(name, mode, data_dir=FLAGS.data_dir, download=FLAGS.download)


def evaluation_optimizer():
    """--optimizer in its canonical spelling ("L2L", "Adam", ...): names are case-insensitive."""
    if FLAGS.optimizer.lower() == "l2l":
        return "L2L"
    if FLAGS.optimizer.lower() not in (name.lower() for name in names.BASELINES):
        raise UsageError(f"unknown --optimizer={FLAGS.optimizer!r}: expected L2L or one of "
                         f"{', '.join(names.BASELINES)} (any case)")
    return names.baseline_name(FLAGS.optimizer, "optimizer")


def check_evaluation_flags(net):
    """Every check of the evaluation flags that needs no TensorFlow: names, counts, and the --path file itself
    (a weights file of the `net` this entry point evaluates, "dm" or "rnnprop")."""
    optimizer = evaluation_optimizer()
    names.positive("num_steps", FLAGS.num_steps)
    names.positive("num_epochs", FLAGS.num_epochs)
    guard_options()
    if optimizer != "L2L":
        names.positive("learning_rate", FLAGS.learning_rate)
        return
    path = learned_optimizer_path()
    found = learned_optimizer_kind(path)
    if found != net:
        raise UsageError(f"{FLAGS.path} holds {_NET_DESCRIPTIONS[found]}, not {_NET_DESCRIPTIONS[net]}: "
                         f"evaluate it with `python -m l2o_tf.evaluate_{found}`")


def learned_optimizer_path():
    """The weights file --path names: a file, a directory holding one, or a shipped model's name (as `l2o_tf.load`
    takes them)."""
    if not FLAGS.path:
        raise UsageError("--optimizer=L2L needs --path: a learned optimizer's weights file (e.g. .../cw.l2l-0), its "
                         f"directory, or a shipped model ({', '.join(models.SHIPPED)})")
    kind, path = models.resolve(FLAGS.path)
    if kind == "scale":
        raise UsageError(f"{FLAGS.path} is an L2O-Scale checkpoint: evaluate it with `python -m l2o_scale.metatest "
                         f"--train_dir={FLAGS.path}`")
    return path


_NET_DESCRIPTIONS = {"dm": "an L2O-DM optimizer (cw.l2l)", "rnnprop": "an RNNprop optimizer (rp.l2l)"}
_NET_CLASS_NAMES = {"CoordinateWiseDeepLSTM": "dm", "RNNprop": "rnnprop"}  # networks.NETS, by class name


def learned_optimizer_kind(path):
    """ "dm" or "rnnprop": the learned optimizer a weights file holds, read without TensorFlow (its `.json` sidecar's
    class if there is one, else RNNprop's input projection in the pickle). A missing, unsafe or malformed file is a
    `WeightsFileError`; `networks.load` checks the rest (every variable and shape)."""
    weights = original_pickle.read(path)
    sidecar = path + ".json"
    if os.path.exists(sidecar):
        try:
            with open(sidecar, encoding="utf-8") as f:
                return _NET_CLASS_NAMES[json.load(f)["class_name"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise original_pickle.WeightsFileError(f"{sidecar}: not a valid l2o-tf config sidecar "
                                                   f"({type(e).__name__}: {e})") from None
    if "input_projection" in weights:
        return "rnnprop"
    if "lstm_1" not in weights:
        raise original_pickle.WeightsFileError(
            f"{path}: not an L2O-DM or RNNprop weights file (modules {', '.join(sorted(weights)) or 'none'}; "
            "expected lstm_1, lstm_2, linear and, for RNNprop, input_projection)")
    return "dm"


def evaluation_main(net):
    """`evaluate_dm` / `evaluate_rnnprop` after the fast checks: the flags into `evaluate.run_and_record`; `net`
    ("dm" or "rnnprop") is the learned optimizer `--optimizer=L2L` expects."""
    from l2o_tf import evaluate, networks, optimizers  # TensorFlow loads here
    check_evaluation_flags(net)
    optimizer, overrides = evaluation_optimizer(), cell_flags()
    seed = names.seed_or_random(FLAGS.seed)
    if optimizer == "L2L":  # a weights file of `net`'s network: check_evaluation_flags made sure
        rule = networks.load(learned_optimizer_path(), **overrides)
    else:
        rule = optimizers.get(optimizer, FLAGS.learning_rate)
    data = check_problem_and_data(mode="test")
    problem = make_problem(mode="test")
    guard = guard_options()
    if guard:
        from l2o_tf import guards
        rule, problem = guards.guard_problem(problem, rule, seed, **guard)
        logging.info("guarded by %s with %s at %g: %s", guard["guard"], guard["guard_optimizer"],
                     guard["guard_learning_rate"], rule.cost())
    run_flags = {name: FLAGS[name].value for name in ("problem", "path", "num_epochs", "num_steps", "learning_rate",
                                                      "data_dir", *overrides)}
    run_flags.update(data_source=data.source if data else None, embedded_sample=bool(data and data.is_sample),
                     weights_file=learned_optimizer_path() if optimizer == "L2L" else None)
    evaluate.run_and_record(problem, rule, optimizer, FLAGS.num_steps, FLAGS.num_epochs, seed, FLAGS.output_path,
                            run_flags, guard)


def make_problem(mode):
    """The --problem in `mode` ("train" or "test"), with the data flags."""
    from l2o_tf import problems  # imports TensorFlow
    return problems.get(FLAGS.problem, mode=mode, data_dir=FLAGS.data_dir, download=FLAGS.download)


def run(main, mode=None, check=None):
    """Run `main()` under absl after the fast checks (`check()`, then with a `mode` --problem and its data, all before
    TensorFlow is imported); user errors end as one line and status 2, an interrupted run as its resume line and
    status 130. `--help` lists the flags."""

    def absl_main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        try:
            if check is not None:
                check()
            data = check_problem_and_data(mode) if mode else None
            import_tensorflow(quiet=not FLAGS["verbosity"].present)
            result = main()
        except errors.Interrupted as e:
            print(e, file=sys.stderr)
            sys.exit(130)
        except errors.L2OError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        if data is not None and data.is_sample:  # announced at the start by datasets.load, and again here
            logging.warning("this run used the %s, not the full data set: its results are not comparable with the "
                            "paper's (give the data with --data_dir=DIR or $L2O_DATA_DIR)", data.source)
        return result

    try:
        print_help_if_asked(sys.argv)
        app.run(absl_main, flags_parser=parse_flags)
    except BrokenPipeError:  # the output went into `| head`: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


def parse_flags(argv):
    """absl's flag parsing, with its errors (an unknown flag and absl's "Did you mean", a bad value) as one
    `error:` line and status 2, like every other bad input (absl's own parser prints FATAL and exits 1)."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


_HELP_FLAGS = {"--help": False, "-?": False, "--helpshort": False, "-h": False, "--helpfull": True}


def print_help_if_asked(argv):
    """`--help` (`-h`, `-?`, `--helpshort`): the entry point's docstring and the project's flags; `--helpfull`: also
    absl's own (--verbosity, --flagfile, ...). Exit status 0. (absl's own --help lists no flag of ours, since they
    are defined here rather than in the main module, and exits 1.)"""
    flag_args = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    asked = [_HELP_FLAGS[arg] for arg in flag_args if arg in _HELP_FLAGS]
    if not asked:
        return
    doc = (sys.modules["__main__"].__doc__ or "").strip()
    print(doc + "\n\nflags:")
    own = [FLAGS.module_help(__name__), FLAGS.main_module_help()]  # defined here, or by the entry point itself
    print(FLAGS.get_help().rstrip() if any(asked) else "\n\n".join(t.rstrip() for t in own if t.strip()))
    if not any(asked):
        print("\nabsl's own flags (--verbosity to show TensorFlow's start-up messages, --flagfile=FILE to read flags "
              "from a file, e.g. configs/dm.flags): --helpfull")
    sys.exit(0)


# TensorFlow's start-up notices, printed to the C-level stderr before its logging is initialised (so
# TF_CPP_MIN_LOG_LEVEL does not hide them): CUDA probing on a machine without a GPU, oneDNN and CPU-feature notes.
_TF_NOISE = re.compile(r"All log messages before absl::InitializeLog|oneDNN custom operations|Could not find cuda "
                       r"drivers|cpu_feature_guard|To enable the following instructions|failed call to cuInit|"
                       r"Unable to register cu\w+ factory|computation placer already registered|TF-TRT Warning")


def import_tensorflow(quiet=True):
    """Import TensorFlow; `quiet` (the default, unless --verbosity is given) drops its start-up noise, sets
    TF_CPP_MIN_LOG_LEVEL=3 unless the environment sets it, and keeps TensorFlow's own Python INFO lines (such as
    the checkpoint saver's "Sharding callback duration") out of the log. Any other line it prints is kept."""
    if quiet:
        logging.get_absl_logger().addFilter(_no_tensorflow_info)
    if "tensorflow" in sys.modules or not quiet:
        import tensorflow  # pylint: disable=import-outside-toplevel,unused-import
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with filtered_stderr():
        import tensorflow  # pylint: disable=import-outside-toplevel,unused-import,redefined-outer-name


def _no_tensorflow_info(record):
    """Drop INFO (and DEBUG) lines that TensorFlow's own Python code logs through absl; keep warnings and ours."""
    return record.levelno >= converter.STANDARD_WARNING or f"{os.sep}tensorflow{os.sep}" not in record.pathname


@contextlib.contextmanager
def filtered_stderr(noise=_TF_NOISE):
    """Capture what is written to file descriptor 2 (C libraries included) and pass on the lines `noise` misses."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not noise.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()
