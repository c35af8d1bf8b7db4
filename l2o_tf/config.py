"""What a meta-training run is, as one value: `TrainConfig`. No TensorFlow here, so the command line can build and
check it within a second, and a user can build one in Python and run `training.MetaTraining(config, ...)`.

The fields are the original `train_dm.py` / `train_rnnprop.py` flags (same names, same defaults) plus our own
(`tensorboard_dir`, `checkpoint_secs`, the cell's config).
"""
import dataclasses

from l2o_tf import curriculum
from l2o_tf import errors

# The hand-designed rules by lower-case name (l2o_tf.optimizers.RULES, which imports TensorFlow, has the same keys).
BASELINE_NAMES = ("adagrad", "adam", "nag", "rmsprop", "sgd")
DM_MT_RATIOS = (0.0, 0.1, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3)  # the original train_dm.py default
STRATEGIES = ("default", "mirrored", "multi_worker")  # l2o_tf.distribute.strategy_named
RESUME_MUST_MATCH = ("net", "problem", "if_cl", "if_mt", "num_steps_schedule", "unroll_length", "num_steps")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    net: str = "dm"                       # "dm" (L2O-DM) or "rnnprop"
    problem: str = "mnist"
    save_path: str | None = None
    num_epochs: int = 10000
    evaluation_period: int = 100          # the original's: 100 for DM, 10 for RNNprop
    evaluation_epochs: int = 20
    num_steps: int = 100
    unroll_length: int = 20
    learning_rate: float = 0.001
    second_derivatives: bool = False
    if_scale: bool = False
    rd_scale_bound: float = 3.0
    if_cl: bool = False
    num_steps_schedule: tuple = curriculum.DEFAULT_SCHEDULE
    min_num_eval: int = 3
    if_mt: bool = False
    num_mt: int = 1
    optimizers: tuple = ("adam",)         # imitation teachers, lower case
    mt_ratio: float = 0.3
    mt_ratios: tuple = DM_MT_RATIOS
    k: int = 1
    self_improving: bool = False
    auxiliary_optimizers: tuple = ("adam", "sgd", "adagrad")
    auxiliary_decay_epochs: int = 100
    seed: int | None = None
    snapshot_every: int = 0               # also keep the weights of every this many epochs (<key>.l2l-<epoch>); 0: off
    checkpoint_secs: float = 60.0
    tensorboard_dir: str | None = None
    strategy: str = "default"             # l2o_tf.distribute: one device, all local GPUs, or a $TF_CONFIG cluster
    num_optimizees: int | None = None     # per meta-step, over all replicas (their meta-gradients averaged); None: 1
                                          # per replica
    cell: dict = dataclasses.field(default_factory=dict)  # the cell's config overrides, e.g. RNNprop's beta1

    @property
    def scale_bound(self):
        """The random-scaling bound of training trajectories (0: no scaling)."""
        return self.rd_scale_bound if self.if_scale else 0.0

    @property
    def schedule(self):
        """The training lengths: the curriculum's, or the one fixed --num_steps."""
        return tuple(self.num_steps_schedule) if self.if_cl else (self.num_steps,)

    def resume_key(self):
        """The fields a resumed run must share with the run that wrote the checkpoint."""
        return {name: _plain(getattr(self, name)) for name in RESUME_MUST_MATCH}

    def as_dict(self):
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def validate(self):
        """Raise `errors.UsageError` naming the flag for anything the run could not do; returns self."""
        if self.net not in ("dm", "rnnprop"):
            raise errors.UsageError(f"unknown network {self.net!r}: expected dm or rnnprop")
        for name in ("num_epochs", "evaluation_period", "evaluation_epochs", "num_steps", "unroll_length",
                     "min_num_eval", "num_mt", "k", "auxiliary_decay_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise errors.UsageError(f"--{name} must be a positive integer, got {value!r}")
        check_distribute(self.strategy, self.num_optimizees)
        if not isinstance(self.snapshot_every, int) or self.snapshot_every < 0:
            raise errors.UsageError(f"--snapshot_every must be 0 (off) or a positive integer, got "
                                    f"{self.snapshot_every!r}")
        if self.snapshot_every and self.if_cl:
            raise errors.UsageError("--snapshot_every is for runs without --if_cl: the curriculum names its saves "
                                    "<key>.l2l-<stage>")
        if self.snapshot_every and not self.save_path:
            raise errors.UsageError("--snapshot_every needs --save_path, where the snapshots go")
        for name in ("learning_rate", "rd_scale_bound", "checkpoint_secs"):
            if not getattr(self, name) > 0:
                raise errors.UsageError(f"--{name} must be positive, got {getattr(self, name)!r}")
        short = [steps for steps in self.schedule if steps < self.unroll_length]
        if short:
            flag = "--num_steps_schedule" if self.if_cl else "--num_steps"
            raise errors.UsageError(f"{flag} has {short[0]} steps, fewer than one unroll (--unroll_length="
                                    f"{self.unroll_length}): such an epoch would train nothing")
        if self.if_cl and not self.save_path:
            raise errors.UsageError("--if_cl needs --save_path: each stage restores its best model from there")
        if not 0 <= self.mt_ratio <= 1 or not all(0 <= r <= 1 for r in self.mt_ratios) or not self.mt_ratios:
            raise errors.UsageError(f"--mt_ratio and --mt_ratios must lie in [0, 1], got {self.mt_ratio} and "
                                    f"{' '.join(map(str, self.mt_ratios)) or 'nothing'}")
        for flag, names in (("--optimizers", self.optimizers), ("--auxiliary_optimizers", self.auxiliary_optimizers)):
            unknown = [n for n in names if n not in BASELINE_NAMES]
            if unknown or not names:
                raise errors.UsageError(f"{flag}: unknown optimizer {unknown[0] if unknown else '(none)'!r}; "
                                        f"expected some of {', '.join(BASELINE_NAMES)}")
        if self.if_mt and self.num_mt > len(self.optimizers):
            raise errors.UsageError(f"--num_mt={self.num_mt} needs that many --optimizers, got "
                                    f"{','.join(self.optimizers)}")
        return self


def check_distribute(strategy, num_optimizees):
    """The --strategy and --num_optimizees of any meta-training config (`errors.UsageError` naming the flag)."""
    if strategy not in STRATEGIES:
        raise errors.UsageError(f"unknown --strategy={strategy!r}: expected one of {', '.join(STRATEGIES)}")
    if num_optimizees is not None and (not isinstance(num_optimizees, int) or num_optimizees <= 0):
        raise errors.UsageError(f"--num_optimizees must be a positive integer, got {num_optimizees!r}")


def parse_names(text):
    """'Adam, sgd' -> ('adam', 'sgd'): optimizer names are case-insensitive everywhere."""
    return tuple(name.strip().lower() for name in text.split(",") if name.strip())


def parse_ratios(text):
    try:
        return tuple(float(r) for r in text.replace(",", " ").split())
    except ValueError:
        raise errors.UsageError(f"--mt_ratios must be space-separated numbers, got {text!r}") from None


def parse_schedule(text):
    try:
        return curriculum.parse_schedule(text)
    except ValueError as e:
        raise errors.UsageError(f"--num_steps_schedule: {e}") from None


def _plain(value):
    """JSON-friendly: tuples as lists (so a config read back from JSON compares equal)."""
    return list(value) if isinstance(value, tuple) else value
