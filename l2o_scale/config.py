"""What an L2O-Scale meta-training run is, as one value: `ScaleConfig` (the flags of SPEC_SCALE §7.1). No TensorFlow
here, so `l2o_scale.metarun` checks its flags within a second.

The field names are the original `metarun.py` flags with the original defaults. The properties at the end give the
names the shared trainer (`l2o_tf.training.MetaTraining`) reads, so the same loop runs DM, RNNprop and Scale.
"""
import dataclasses
import os

from l2o_tf import config as train_config
from l2o_tf import errors

# The train copy's curriculum (§4.1): 12 stages; with 20-step unrolls 5, 10, 25, ..., 250 unrolls.
SCALE_SCHEDULE = (100, 200, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500, 5000)
LOGDIR_NAME = "HierarchicalRNN_GRUCell_20_2"  # the original's logdir under --train_dir
REG_OPTIONS = ("hessian", "hessian-ev", "hessian-esd", "jacob")
# What a resumed run may change (as l2o_tf.config.RESUME_MAY_CHANGE): its length, where it runs, and where and when it
# writes (--save_period: which model.ckpt-<k> are kept; jit_compile: XLA or not for validation runs).
RESUME_MAY_CHANGE = ("num_meta_iterations", "train_dir", "logdir_name", "save_period", "checkpoint_secs",
                     "tensorboard_dir", "strategy", "jit_compile")


@dataclasses.dataclass(frozen=True)
class ScaleConfig:
    train_dir: str = "opt/"
    logdir_name: str = LOGDIR_NAME             # <optimizer>_<cell_cls>_<cell_size>_<num_cells> in the original
    problem: str = "mnist"                    # --include_mnist_mlp_problems: the sigmoid MLP 784-20-10, batch 128
    num_meta_iterations: int = 5
    num_unroll_scale: float = 40.0
    min_num_unrolls: int = 10
    num_partial_unroll_itr_scale: float = 20.0
    min_num_itr_partial_unroll: int = 10
    fix_unroll: bool = False
    fix_unroll_length: int = 20
    fix_num_steps: int = 100
    fix_num_steps_eval: int = 100
    if_cl: bool = False
    num_steps_schedule: tuple = SCALE_SCHEDULE
    min_num_eval: int = 3
    evaluation_period: int = 1
    evaluation_epochs: int = 20
    save_period: int = 1
    meta_learning_rate: float = 1e-6
    rms_decay: float = 0.9
    rms_epsilon: float = 1e-20
    gradient_clip_level: float = 1e4
    l2_reg: float = 0.0
    use_second_derivatives: bool = True
    use_log_objective: bool = True
    use_numerator_epsilon: bool = False
    mini_batch_size: int = 10000               # examples per unroll's data subset
    data_freeze: bool = False
    reset_rnn_params: bool = True              # True: the state is reset only at the run's first unroll (§8.1)
    if_mt: bool = False
    mt_ratio: float = 0.1
    mt_k: int = 1
    reg_optimizer: bool = False
    reg_optimizee: bool = False
    alpha: float = 5e-4
    beta: float = 1e-4
    reg_option: str = "hessian"
    hessian_itrs: int = 10
    regularize_time: str = "posterior"
    reg_scale: float = 0.5
    optimizer_config: dict = dataclasses.field(default_factory=dict)  # HierarchicalRNN arguments (init_lr_range...)
    seed: int | None = None
    checkpoint_secs: float = 60.0
    tensorboard_dir: str | None = None
    jit_compile: bool | None = None            # XLA for validation runs; None: unless the problem has convolutions
    strategy: str = "default"                  # l2o_tf.distribute: one device, all local GPUs, or a $TF_CONFIG cluster
    num_optimizees: int | None = None          # per meta-iteration, over all replicas; None: one per replica

    # -- what the shared trainer reads ----------------------------------------------------------------------------
    net = "scale"
    self_improving = False
    epochs_flag = "num_meta_iterations"
    resume_may_change = RESUME_MAY_CHANGE

    @property
    def save_path(self):
        """The original's logdir: <train_dir>/HierarchicalRNN_GRUCell_20_2."""
        return os.path.join(self.train_dir, self.logdir_name) if self.train_dir else None

    @property
    def num_epochs(self):
        return self.num_meta_iterations

    @property
    def schedule(self):
        """Training lengths in steps: the curriculum's, or (without it) the validation length --fix_num_steps_eval
        (training then follows the unroll plan, §3.2)."""
        return tuple(self.num_steps_schedule) if self.if_cl else (self.fix_num_steps_eval,)

    @property
    def mt_ratios(self):
        return (self.mt_ratio,)  # one imitation probability at every curriculum stage

    @property
    def unroll_length(self):
        return self.fix_unroll_length

    def as_dict(self):
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def validate(self):
        """Raise `errors.UsageError` naming the flag for anything the run could not do; returns self."""
        for name in ("num_meta_iterations", "min_num_unrolls", "min_num_itr_partial_unroll", "fix_unroll_length",
                     "fix_num_steps", "fix_num_steps_eval", "min_num_eval", "evaluation_period", "evaluation_epochs",
                     "save_period", "mini_batch_size", "mt_k", "hessian_itrs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise errors.UsageError(f"--{name} must be a positive integer, got {value!r}")
        for name in ("num_unroll_scale", "num_partial_unroll_itr_scale", "meta_learning_rate", "gradient_clip_level",
                     "checkpoint_secs"):
            if not getattr(self, name) > 0:
                raise errors.UsageError(f"--{name} must be positive, got {getattr(self, name)!r}")
        for name in ("rms_epsilon", "l2_reg"):
            if not getattr(self, name) >= 0:
                raise errors.UsageError(f"--{name} must be non-negative, got {getattr(self, name)!r}")
        train_config.check_distribute(self.strategy, self.num_optimizees)
        if not 0 <= self.rms_decay < 1:
            raise errors.UsageError(f"--rms_decay must lie in [0, 1), got {self.rms_decay}")
        if not 0 <= self.mt_ratio <= 1:
            raise errors.UsageError(f"--mt_ratio must lie in [0, 1], got {self.mt_ratio}")
        for flag, steps in (("--fix_num_steps", self.fix_num_steps), ("--fix_num_steps_eval", self.fix_num_steps_eval)):
            if steps < self.fix_unroll_length:
                raise errors.UsageError(f"{flag}={steps} is shorter than one unroll (--fix_unroll_length="
                                        f"{self.fix_unroll_length})")
        if self.if_cl:
            short = [s for s in self.num_steps_schedule if s < self.fix_unroll_length]
            if short:
                raise errors.UsageError(f"the curriculum's {short[0]} steps are shorter than one unroll "
                                        f"(--fix_unroll_length={self.fix_unroll_length})")
            if not self.train_dir:
                raise errors.UsageError("--if_cl needs --train_dir: each stage restores its best model from there")
        if self.reg_option not in REG_OPTIONS:
            raise errors.UsageError(f"unknown --reg_option={self.reg_option!r}: expected one of "
                                    f"{', '.join(REG_OPTIONS)}")
        if self.reg_optimizee:
            raise errors.UsageError("--reg_optimizee (curvature-regularised optimizee gradients) is not implemented; "
                                    "the README run leaves it off")
        if self.reg_optimizer and self.regularize_time != "none":
            raise errors.UsageError(
                f"--reg_optimizer with --regularize_time={self.regularize_time} (a curvature regulariser in the "
                "meta-objective, needing third derivatives) is not implemented; the README run sets "
                "--regularize_time=none, which makes it exactly zero")
        return self


def _plain(value):
    """JSON-friendly: tuples as lists (so a config read back from JSON compares equal)."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in sorted(value.items())}
    return value
