"""What a meta-training run is, as one value: `TrainConfig`. No TensorFlow here, so the command line can build and
check it within a second, and a user can build one in Python and run `training.MetaTraining(config, ...)`.

The fields are the original `train_dm.py` / `train_rnnprop.py` flags (same names, same defaults) plus our own
(`tensorboard_dir`, `checkpoint_secs`, the cell's config).
"""
import dataclasses

from l2o_tf import curriculum
from l2o_tf import errors
from l2o_tf import names

# The defaults in which the original train_dm.py and train_rnnprop.py differ; TrainConfig's own are L2O-DM's.
NET_DEFAULTS = {"dm": {"evaluation_period": 100, "mt_ratios": (0.0, 0.1, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3)},
                "rnnprop": {"evaluation_period": 10, "mt_ratios": (0.3, 0.3, 0.3)}}
STRATEGIES = ("default", "mirrored", "multi_worker")  # l2o_tf.distribute.strategy_named
# What a resumed run may change: how long it trains, where it runs, and where and when it writes, never what it
# computes. Every other setting must be the checkpoint's; --seed and --num_optimizees are compared apart, as the run's
# actual seed (none given: the checkpoint's) and optimizee count (l2o_tf.training).
RESUME_MAY_CHANGE = ("num_epochs", "save_path", "checkpoint_secs", "tensorboard_dir", "snapshot_every", "strategy")
RESUME_COMPARED_APART = ("seed", "num_optimizees")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    net: str = "dm"                       # "dm" (L2O-DM) or "rnnprop"
    problem: str = "mnist"
    save_path: str | None = None
    num_epochs: int = 10000
    evaluation_period: int = NET_DEFAULTS["dm"]["evaluation_period"]
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
    mt_ratios: tuple = NET_DEFAULTS["dm"]["mt_ratios"]
    k: int = 1
    imitation_initial_state: str = "zeros"  # or "main", the original's (names.IMITATION_INITIAL_STATES)
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

    epochs_flag = "num_epochs"            # the flag of `num_epochs`, for messages
    resume_may_change = RESUME_MAY_CHANGE

    @property
    def scale_bound(self):
        """The random-scaling bound of training trajectories (0: no scaling)."""
        return self.rd_scale_bound if self.if_scale else 0.0

    @property
    def schedule(self):
        """The training lengths: the curriculum's, or the one fixed --num_steps."""
        return tuple(self.num_steps_schedule) if self.if_cl else (self.num_steps,)

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
        known = [name.lower() for name in names.BASELINES]
        for flag, chosen in (("--optimizers", self.optimizers), ("--auxiliary_optimizers", self.auxiliary_optimizers)):
            unknown = [n for n in chosen if n not in known]
            if unknown or not chosen:
                raise errors.UsageError(f"{flag}: unknown optimizer {unknown[0] if unknown else '(none)'!r}; "
                                        f"expected some of {', '.join(known)}")
        if self.imitation_initial_state not in names.IMITATION_INITIAL_STATES:
            raise errors.UsageError(f"unknown --imitation_initial_state={self.imitation_initial_state!r}: expected "
                                    f"one of {', '.join(names.IMITATION_INITIAL_STATES)}")
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


def resume_differences(config, saved):
    """({setting: (value in `saved`, value now)}, {field `saved` lacks: its default}) of a config dataclass against
    `saved`, the config dict of the checkpoint it would resume, over every field but its `resume_may_change` and
    RESUME_COMPARED_APART.

    A dict-valued field (the cell's --beta1, --beta2) is compared key by key. A field `saved` lacks was added after the
    checkpoint was written: it counts as its default, so an older run resumes where its settings are the defaults."""
    skipped = config.resume_may_change + RESUME_COMPARED_APART
    compared = [f.name for f in dataclasses.fields(config) if f.name not in skipped]
    defaults, current = type(config)().as_dict(), config.as_dict()
    missing = {name: defaults[name] for name in compared if name not in saved}
    there = _settings({name: saved.get(name, defaults[name]) for name in compared})
    now = _settings({name: current[name] for name in compared})
    differences = {name: (there.get(name), now.get(name)) for name in {**there, **now}
                   if there.get(name) != now.get(name)}
    return differences, missing


def _settings(values):
    """{setting: value}, a dict-valued field's keys (the flags it comes from) in its place."""
    settings = {}
    for name, value in values.items():
        settings.update(value if isinstance(value, dict) else {name: value})
    return settings


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
