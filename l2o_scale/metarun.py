r"""Meta-train L2O-Scale: the original `l2o-scale-regularize-train/metarun.py` flags and defaults (SPEC_SCALE §7.1).

The README's run (curriculum + imitation; its regulariser is off, --regularize_time=none):

    python -m l2o_scale.metarun --train_dir=hess_cl_mt --regularize_time=none --alpha=1e-4 --reg_optimizer=True \
        --reg_option=hessian-esd --include_mnist_mlp_problems --num_problems=1 --num_meta_iterations=100 \
        --fix_unroll=True --fix_unroll_length=20 --evaluation_period=1 --evaluation_epochs=5 \
        --use_second_derivatives=False --if_cl=True --if_mt=True --mt_ratio=0.1 --mt_k=1 --data_dir=DIR

Writes TF1 checkpoints with the original variable names to <train_dir>/HierarchicalRNN_GRUCell_20_2/ (model.ckpt-0 is
the best; evaluate it with `python -m l2o_scale.metatest --train_dir=<train_dir> --restore_model_name=model.ckpt-0`).
Running the same command again resumes; Ctrl-C saves first and says so. A resume refuses any changed setting but
--num_meta_iterations (raise it to continue a run that reached it), --checkpoint_secs, --tensorboard_dir,
--save_period and --strategy; a finished run says so and trains no further. --strategy and --num_optimizees spread
each meta-iteration over several optimizees and devices as L2O-DM's (the README's "Scaling out").
"""
import dataclasses

from absl import flags

from l2o_scale import config as config_lib
from l2o_tf import cli
from l2o_tf import curriculum
from l2o_tf import datasets
from l2o_tf import errors
from l2o_tf import names

FLAGS = flags.FLAGS
# problem-group flag -> l2o_tf problem name (None: a problem of the original's train copy not implemented here)
PROBLEM_FLAGS = {"include_mnist_mlp_problems": "mnist", "include_mnist_conv_problems": None,
                 "include_cifar10_conv_problems": None}
# HierarchicalRNN options the original could change and ours fixes at the original's default: (flag, default)
FIXED_ARCHITECTURE = (("zero_init_lr_weights", True), ("use_relative_lr", True), ("use_extreme_indicator", False),
                      ("use_log_means_squared", True), ("use_problem_lr_mean", True), ("learnable_decay", True),
                      ("dynamic_output_scale", True), ("use_attention", False), ("num_gradient_scales", 4),
                      ("use_gradient_shortcut", True), ("use_lr_shortcut", False), ("use_grad_products", True),
                      ("use_multiple_scale_decays", False), ("learnable_inp_decay", True),
                      ("learnable_rnn_init", True))
# hierarchical_rnn.py flags -> HierarchicalRNN argument
INIT_FLAGS = {"biasgrucell_scale": "gru_scale", "biasgrucell_gate_bias_init": "gate_bias_init",
              "hrnn_rnn_readout_scale": "readout_scale", "hrnn_default_decay_var_init": "input_decay_bias_init",
              "scale_decay_bias_init": "scale_decay_bias_init",
              "learning_rate_momentum_logit_init": "lr_momentum_logit_init", "hrnn_affine_scale": "affine_scale"}

flags.DEFINE_string("train_dir", "opt/", "Root directory; checkpoints go to <train_dir>/HierarchicalRNN_GRUCell_20_2.")
flags.DEFINE_integer("num_problems", 1, "Problem draws; one problem group is implemented, so only 1.")
flags.DEFINE_integer("num_meta_iterations", 5, "Meta-iterations (fresh optimizees); the README uses 100.")
flags.DEFINE_float("num_unroll_scale", 40, "Exponential scale of the number of unrolls (without --fix_unroll).")
flags.DEFINE_integer("min_num_unrolls", 10, "Added to it (the draw is clipped to 3x this).")
flags.DEFINE_float("num_partial_unroll_itr_scale", 20, "Exponential scale of the steps per unroll.")
flags.DEFINE_integer("min_num_itr_partial_unroll", 10, "Added to it (the draw is clipped to 3x this).")
flags.DEFINE_string("optimizer", "HierarchicalRNN", "The learned optimizer: only HierarchicalRNN can be meta-trained "
                    "(the original's others are broken in its train copy).")
flags.DEFINE_integer("cell_size", 20, "Used in the original only in the logdir name.")
flags.DEFINE_integer("num_cells", 2, "Used in the original only in the logdir name.")
flags.DEFINE_string("cell_cls", "GRUCell", "Used in the original only in the logdir name.")
flags.DEFINE_float("meta_learning_rate", 1e-6, "Learning rate of the meta-optimizer (TF1 RMSProp).")
flags.DEFINE_float("gradient_clip_level", 1e4, "Element-wise clip of the meta-gradients.")
for _flag, _problem in PROBLEM_FLAGS.items():
    flags.DEFINE_bool(_flag, False, "Train on the MNIST MLP 784-20-10, sigmoid, batch 128." if _problem else
                      "The original's train-copy ConvNet problem group (not implemented).")
flags.DEFINE_float("min_lr", 1e-6, "Lowest initial learning rate of the optimizer state.")
flags.DEFINE_float("max_lr", 1e-2, "Highest initial learning rate of the optimizer state.")
for _flag, _default in FIXED_ARCHITECTURE:
    (flags.DEFINE_integer if isinstance(_default, int) and not isinstance(_default, bool) else flags.DEFINE_bool)(
        _flag, _default, "HierarchicalRNN option, fixed at the original's default.")
flags.DEFINE_float("max_log_lr", 33, "Upper clip of the log learning rate.")
flags.DEFINE_bool("use_log_objective", True, "Meta-objective: mean log loss ratio (else the weighted loss ratio).")
flags.DEFINE_bool("use_numerator_epsilon", False, "Log objective as log((F + 1e-6) / (f0 + 1e-6)).")
flags.DEFINE_bool("use_second_derivatives", True, "Backpropagate through the optimizee gradients (README: False).")
flags.DEFINE_float("objective_training_max_multiplier", -1, "Stop an unroll early above this multiple (disabled; "
                   "only -1 is implemented).")
flags.DEFINE_bool("if_cl", False, "Curriculum over 100 200 500 ... 5000 steps, validating at the next stage's.")
flags.DEFINE_string("num_steps_schedule", " ".join(map(str, config_lib.SCALE_SCHEDULE)), "Curriculum stages in "
                    "steps (ours; the original hard-codes these 12).")
flags.DEFINE_bool("fix_unroll", False, "Fixed unrolls: --fix_num_steps // --fix_unroll_length of that length.")
flags.DEFINE_integer("fix_unroll_length", 20, "Steps per unroll with --fix_unroll or --if_cl.")
flags.DEFINE_integer("fix_num_steps", 100, "Steps per meta-iteration with --fix_unroll.")
flags.DEFINE_integer("fix_num_steps_eval", 100, "Validation steps without --if_cl.")
flags.DEFINE_integer("evaluation_period", 1, "Validate every this many meta-iterations.")
flags.DEFINE_integer("evaluation_epochs", 20, "Validation runs (their costs are averaged; README: 5).")
flags.DEFINE_integer("save_period", 1, "Without --if_cl, save model.ckpt-<k> every this many meta-iterations.")
flags.DEFINE_integer("mini_batch_size", 10000, "Examples in each unroll's data subset (the meta-objective's data).")
flags.DEFINE_float("l2_reg", 0.0, "L2 penalty on the meta-parameters.")
flags.DEFINE_float("rms_decay", 0.9, "Decay of the meta-optimizer's mean square.")
flags.DEFINE_float("rms_epsilon", 1e-20, "Epsilon of the meta-optimizer, inside the square root.")
flags.DEFINE_bool("data_freeze", False, "Every unroll uses examples 0..mini_batch_size-1 instead of a random subset.")
flags.DEFINE_bool("reset_rnn_params", True, "The original's inverted flag: True resets the optimizer state only at "
                  "the run's first unroll (carried over between meta-iterations); False at every meta-iteration.")
flags.DEFINE_string("regularize_time", "posterior", "When the optimizer regulariser is on: posterior, prior, none.")
flags.DEFINE_float("reg_scale", 0.5, "Fraction of the unrolls before the posterior/prior switch.")
flags.DEFINE_bool("if_mt", False, "Imitation ('multi-task') meta-iterations with an Adam(0.01) teacher.")
flags.DEFINE_float("mt_ratio", 0.1, "Probability that a meta-iteration imitates.")
flags.DEFINE_integer("mt_k", 1, "Teacher steps per imitated step.")
flags.DEFINE_float("alpha", 5e-4, "Weight of the optimizer regulariser.")
flags.DEFINE_float("beta", 1e-4, "Weight of the optimizee regulariser.")
flags.DEFINE_bool("reg_optimizer", False, "Curvature regulariser in the meta-objective (only with "
                  "--regularize_time=none, where it is zero).")
flags.DEFINE_bool("reg_optimizee", False, "Curvature-regularised optimizee gradients (not implemented).")
flags.DEFINE_integer("hessian_itrs", 10, "Iterations of the curvature estimates.")
flags.DEFINE_string("reg_option", "hessian", "Curvature estimate: hessian, hessian-ev, hessian-esd, jacob.")
for _flag, _argument in INIT_FLAGS.items():
    flags.DEFINE_float(_flag, None, f"HierarchicalRNN initialisation ({_argument}); default the original's.")
flags.DEFINE_integer("seed", None, "Seed of every random draw; none = a fresh one, logged and checkpointed "
                     "(resuming: the run's own).")
flags.DEFINE_integer("checkpoint_secs", 60, "Also checkpoint after a meta-iteration after this many seconds.")
flags.DEFINE_string("tensorboard_dir", None, "Write meta-objective, validation cost and stage as TensorBoard scalars.")
cli.define_distribute_flags()
cli.define_data_flags()


def problem_name():
    chosen = [flag for flag in PROBLEM_FLAGS if FLAGS[flag].value]
    if not chosen:
        raise errors.UsageError("no training problem selected: give --include_mnist_mlp_problems")
    missing = [flag for flag in chosen if PROBLEM_FLAGS[flag] is None]
    if missing:
        raise errors.UsageError(f"--{missing[0]}: the original's train-copy ConvNets are not implemented; "
                                "--include_mnist_mlp_problems is")
    return PROBLEM_FLAGS[chosen[0]]


def scale_config():
    """The flags as a checked `ScaleConfig` (no TensorFlow); anything not implemented is a `UsageError`."""
    if FLAGS.optimizer != "HierarchicalRNN":
        raise errors.UsageError(f"--optimizer={FLAGS.optimizer}: only HierarchicalRNN can be meta-trained")
    if FLAGS.num_problems != 1:
        raise errors.UsageError(f"--num_problems={FLAGS.num_problems}: one problem group is implemented, so only 1")
    changed = [f"--{flag}={FLAGS[flag].value}" for flag, default in FIXED_ARCHITECTURE if FLAGS[flag].value != default]
    if changed:
        raise errors.UsageError(f"{changed[0]}: l2o_scale.HierarchicalRNN implements the original's default "
                                "architecture only")
    if FLAGS.objective_training_max_multiplier > 0:
        raise errors.UsageError("--objective_training_max_multiplier > 0 (early unroll stop) is not implemented")
    if not 0 < FLAGS.min_lr <= FLAGS.max_lr:
        raise errors.UsageError(f"--min_lr and --max_lr must satisfy 0 < min_lr <= max_lr, got {FLAGS.min_lr}, "
                                f"{FLAGS.max_lr}")
    optimizer = {"init_lr_range": [FLAGS.min_lr, FLAGS.max_lr], "max_log_lr": FLAGS.max_log_lr}
    optimizer.update({argument: FLAGS[flag].value for flag, argument in INIT_FLAGS.items()
                      if FLAGS[flag].value is not None})
    fields = {f.name for f in dataclasses.fields(config_lib.ScaleConfig)}
    values = {name: FLAGS[name].value for name in fields if name in FLAGS}
    try:
        schedule = curriculum.parse_schedule(FLAGS.num_steps_schedule)
    except ValueError as e:
        raise errors.UsageError(f"--num_steps_schedule: {e}") from None
    values.update(problem=problem_name(), optimizer_config=optimizer, num_steps_schedule=schedule, checkpoint_secs=float(FLAGS.checkpoint_secs),
                  logdir_name=f"{FLAGS.optimizer}_{FLAGS.cell_cls}_{FLAGS.cell_size}_{FLAGS.num_cells}")
    return config_lib.ScaleConfig(**values).validate()


def check():
    """The flags and the training data, before TensorFlow loads."""
    config = scale_config()
    datasets.load(names.PROBLEM_DATASETS[config.problem], "train", data_dir=FLAGS.data_dir, download=FLAGS.download)


def main():
    from l2o_scale import meta_training  # TensorFlow loads here, after the flags and the data were checked
    from l2o_tf import distribute, problems
    config = scale_config()
    distribute.strategy_named(config.strategy)  # before any TensorFlow op: a cluster's must exist first
    meta_training.train(config, problems.get(config.problem, mode="train", data_dir=FLAGS.data_dir,
                                             download=FLAGS.download))


if __name__ == "__main__":
    cli.run(main, check=check)
