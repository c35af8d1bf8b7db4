"""Meta-training over several optimizees per meta-step, on one device or data parallel with `tf.distribute`; L2O-DM
and RNNprop (`ParallelTrainer`) and L2O-Scale (`l2o_scale.unroll.ParallelUnroller`) share the pieces.

A meta-step draws `num_optimizees` optimizees (in total, over all replicas; each replica runs an equal share), runs
one unroll of each, and applies the **mean** of their meta-gradients once: each replica differentiates the mean of
its optimizees' objectives, the replicas' gradients (and meta-losses) are all-reduced with MEAN, and the
finiteness check sees the reduced values, so a NaN on any replica skips the update on all of them.

Optimizee k draws from its own generator whatever replica runs it, so the numbers depend on `num_optimizees`, not on
how the optimizees are spread over devices (up to the order of floating-point sums). Optimizee 0 uses the "train"
generator of a one-optimizee run, so with one optimizee on the default strategy a run is today's exactly.

Strategies: "default" (this process's default device), "mirrored" (every local GPU, else the CPU) and
"multi_worker" (`MultiWorkerMirroredStrategy`, the cluster from $TF_CONFIG). The multi-worker strategy must exist
before TensorFlow runs its first op, so entry points call `strategy_named` before loading data.
"""
import contextlib
import copy
import json
import os

import tensorflow as tf

from l2o_tf import config
from l2o_tf import errors
from l2o_tf import meta
from l2o_tf import self_improving

STRATEGIES = config.STRATEGIES
_created = {}
_DEFAULT_STRATEGY = tf.distribute.get_strategy()


def strategy_named(name):
    """The `tf.distribute.Strategy` called `name`, created once per process (a second call returns the same one)."""
    if name not in STRATEGIES:
        raise errors.UsageError(f"unknown --strategy={name!r}: expected one of {', '.join(STRATEGIES)}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name not in _created:
        if name == "multi_worker":
            _check_tf_config()
            try:
                _created[name] = tf.distribute.MultiWorkerMirroredStrategy()
            except RuntimeError as e:  # "Collective ops must be configured at program startup"
                raise errors.L2OError(f"--strategy=multi_worker: {e}; create it with l2o_tf.distribute."
                                      "strategy_named('multi_worker') before TensorFlow runs anything") from None
        else:
            _created[name] = tf.distribute.MirroredStrategy()
    return _created[name]


def _check_tf_config():
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise errors.UsageError("--strategy=multi_worker needs $TF_CONFIG (the cluster and this process's task; see "
                                "the README's 'Scaling out')")
    try:
        cluster = json.loads(text)
        workers, task = cluster["cluster"]["worker"], cluster["task"]
        if task["type"] not in ("worker", "chief") or not isinstance(task["index"], int) or not workers:
            raise ValueError("task type or index")
    except (ValueError, KeyError, TypeError) as e:
        raise errors.UsageError(f"$TF_CONFIG is not a valid cluster description ({type(e).__name__}: {e}); expected "
                                '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": '
                                'i}}') from None


def is_chief(strategy):
    """Whether this process writes files and logs: always, except on the non-chief workers of a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0)


def is_multi_worker(strategy):
    return getattr(strategy.extended, "_num_workers", 1) > 1


def strategy_and_count(config, strategy=None):
    """A run's strategy (`strategy`, else the one --strategy names) and its optimizees per meta-step."""
    strategy = strategy or strategy_named(config.strategy)
    return strategy, resolve_count(strategy, config.num_optimizees)


def resolve_count(strategy, num_optimizees):
    """The number of optimizees per meta-step: `num_optimizees`, or one per replica when None; a multiple of the
    number of replicas."""
    replicas = strategy.num_replicas_in_sync
    count = replicas if num_optimizees is None else int(num_optimizees)
    if count % replicas:
        raise errors.UsageError(f"--num_optimizees={count} must be a multiple of the {replicas} replicas of "
                                "--strategy (each replica runs an equal share)")
    return count


def is_parallel(strategy, count):
    """Whether a run needs `ParallelTrainer`: several optimizees per meta-step or a strategy other than the default
    (one optimizee on the default strategy is `meta.Trainer` itself)."""
    return count > 1 or not _is_default(strategy)


def check_made_in_scope(strategy, cell):
    """A clear error for a learned optimizer built outside `strategy.scope()` (its weights cannot be mirrored)."""
    if not all(strategy.extended.variable_created_in_scope(getattr(v, "value", v)) for v in cell.weights):
        raise errors.UsageError("the learned optimizer's weights were made outside the strategy's scope; build the "
                                "cell under `strategy.scope()`")


def optimizee_generators(strategy, count, names, generator):
    """{name: [generator(name), generator(f"{name}/1"), ..., generator(f"{name}/{count - 1}")]}: optimizee k's
    streams, each made on the device of the replica that runs optimizee k (the optimizees of other workers' on the
    default device: they are kept to be checkpointed). Optimizee 0's are the one-optimizee run's own."""
    per_replica = count // strategy.num_replicas_in_sync
    devices = () if _is_default(strategy) else strategy.extended.worker_devices
    first = _first_local_replica(strategy)
    streams = {}
    for name in names:
        streams[name] = []
        for k in range(count):
            local = k // per_replica - first
            on_device = tf.device(devices[local]) if 0 <= local < len(devices) else contextlib.nullcontext()
            with on_device:
                streams[name].append(generator(name if k == 0 else f"{name}/{k}"))
    return streams


def checkpointed_generators(streams):
    """The checkpoint entry of the optimizees' generators beyond optimizee 0's (none for a one-optimizee run, whose
    checkpoint is then exactly as before)."""
    extra = {f"{name}/{k}": generator for name, generators in streams.items()
             for k, generator in enumerate(generators) if k > 0}
    return {"optimizee_rngs": extra} if extra else {}


def with_rngs(rule, rngs):
    """Each optimizee's update rule: `rule` itself, or for the self-improving mixture (which draws) a shallow copy
    drawing from `rngs[k]` and sharing everything else (the learned cell, the mixture's probabilities)."""
    if not isinstance(rule, self_improving.MixtureRule):
        return [rule] * len(rngs)
    copies = []
    for rng in rngs:
        rule_k = rule if rng is rule.rng else copy.copy(rule)
        rule_k.rng = rng
        copies.append(rule_k)
    return copies


def agree(strategy, flag):
    """True on every worker when `flag` is true on any, so all take the same branch (checkpoint now, stop)."""
    if not is_multi_worker(strategy):
        return bool(flag)
    value = tf.constant(1.0 if flag else 0.0)
    return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, _from_first_local_replica(strategy, value), None) > 0)


def from_chief(strategy, value):
    """The chief's `value` (a float) on every worker, so decisions made from it are the same everywhere."""
    if not is_multi_worker(strategy):
        return value
    mine = tf.constant(float(value) if is_chief(strategy) else 0.0, tf.float64)
    return float(strategy.reduce(tf.distribute.ReduceOp.SUM, _from_first_local_replica(strategy, mine), None))


def gather_generators(strategy, generators):
    """Copy into every worker's `generators` (one per optimizee, in order) the states of the workers that run them,
    so the chief's checkpoint holds every optimizee's stream. Only with several workers (else nothing to do)."""
    if not is_multi_worker(strategy):
        return
    mine = local_optimizees(strategy, len(generators))
    states = every_optimizee(strategy, len(generators), {k: generators[k].state for k in mine})
    for generator, state in zip(generators, states):
        generator.reset(state)


def optimizees_of(strategy, count, replica):
    """The optimizees (of `count` per meta-step) that replica `replica` (its id in the sync group) runs."""
    per_replica = count // strategy.num_replicas_in_sync
    return range(replica * per_replica, (replica + 1) * per_replica)


def local_optimizees(strategy, count):
    """The optimizees this worker's replicas run: all of them, but on a worker of a cluster."""
    per_replica = count // strategy.num_replicas_in_sync
    first = _first_local_replica(strategy) * per_replica
    return range(first, first + per_replica * _num_local_replicas(strategy))


def local_values(strategy, count, per_replica):
    """{optimizee: value} of this worker's optimizees, from `per_replica` (per replica the list of its optimizees'
    values, as `strategy.run` returns it)."""
    first, values = _first_local_replica(strategy), {}
    for i in range(_num_local_replicas(strategy)):
        local = tf.nest.map_structure(lambda value: strategy.experimental_local_results(value)[i], per_replica)
        values.update(zip(optimizees_of(strategy, count, first + i), local))
    return values


def every_optimizee(strategy, count, mine):
    """[every optimizee's value, in order], each as the worker that runs it holds it, the same on every worker.

    `mine` maps this worker's optimizees to their values (tensor structures alike). In a cluster each worker adds
    zeros for the optimizees it does not run and the workers sum (one reduce per dtype)."""
    if not is_multi_worker(strategy):
        return [mine[k] for k in range(count)]
    template = next(iter(mine.values()))
    values = [mine[k] if k in mine else tf.nest.map_structure(tf.zeros_like, template) for k in range(count)]
    return tf.nest.pack_sequence_as(values, _sum_over_workers(strategy, tf.nest.flatten(values)))


def _sum_over_workers(strategy, tensors):
    """The element-wise sums over the workers of `tensors` (each worker's first replica's), one reduce per dtype."""
    sums = [None] * len(tensors)
    for dtype in {t.dtype for t in tensors}:
        indices = [i for i, t in enumerate(tensors) if t.dtype == dtype]
        flat = tf.concat([tf.reshape(tensors[i], [-1]) for i in indices], 0)
        total = strategy.reduce(tf.distribute.ReduceOp.SUM, _from_first_local_replica(strategy, flat), None)
        for i, piece in zip(indices, tf.split(total, [tensors[i].shape.num_elements() for i in indices])):
            sums[i] = tf.reshape(piece, tensors[i].shape)
    return sums


def _from_first_local_replica(strategy, value):
    """`value` on this worker's first replica and zeros on its others, as a PerReplica value to reduce."""
    first = _first_local_replica(strategy)
    return strategy.experimental_distribute_values_from_function(
        lambda context: value if context.replica_id_in_sync_group == first else tf.zeros_like(value))


def _first_local_replica(strategy):
    """The sync-group id of this worker's first replica (0 but on the later workers of a cluster)."""
    replica_id = getattr(strategy.extended, "_get_replica_id_in_sync_group", None)
    return 0 if replica_id is None else int(replica_id(0))


def _num_local_replicas(strategy):
    return 1 if _is_default(strategy) else len(strategy.extended.worker_devices)


def _is_default(strategy):
    return type(strategy) is type(_DEFAULT_STRATEGY)


def mean_over_replicas(strategy, replica_fn, *args):
    """One data-parallel step: `replica_fn(*args)` on every replica returns (carried, values); the values are
    all-reduced (MEAN, in one batch). Returns (carried, per replica as `strategy.run` returns it; the reduced values,
    from this worker's first replica: every replica holds the same, so the caller applies them once)."""
    def replica_step(*replica_args):
        carried, values = replica_fn(*replica_args)
        values = tf.nest.map_structure(tf.identity, values)  # on the replica's device (a cluster's all-reduce needs
        # one, which a value passed through from the inputs lacks)
        return carried, tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.MEAN, values)

    carried, reduced = strategy.run(replica_step, args=args)
    return carried, tf.nest.map_structure(lambda value: strategy.experimental_local_results(value)[0], reduced)


class ParallelTrainer:
    """Meta-trains on `len(rngs)` optimizees per meta-step with `strategy` (see the module docstring); the same
    interface as `meta.Trainer`, whose trajectories are here, per replica, the list of its optimizees'.

    `trainer` is the one-optimizee `meta.Trainer` whose unroll every optimizee runs; `rngs[k]` and `rules[k]` are
    optimizee k's generator and update rule. Build the trainer (its cell, its meta-optimizer) under
    `strategy.scope()`.
    """

    def __init__(self, strategy, trainer, rngs, rules):
        self.strategy, self.trainer = strategy, trainer
        self.rngs, self.rules = list(rngs), list(rules)
        self.count = resolve_count(strategy, len(self.rngs))
        self.problem, self.variables, self.optimizer = trainer.problem, trainer.variables, trainer.optimizer
        self._train_unroll = tf.function(self._unroll, reduce_retracing=True)

    def new_trajectory(self, scale_bound=0.0):
        """Fresh optimizees: per replica (a PerReplica value under a strategy) the list of its optimizees'."""
        def make(context):
            return [meta.new_trajectory(self.problem, self.rules[k], self.rngs[k], scale_bound)
                    for k in optimizees_of(self.strategy, self.count, context.replica_id_in_sync_group)]
        return self.strategy.experimental_distribute_values_from_function(make)

    def train_unroll(self, trajectories):
        """One meta-step on every optimizee. Returns (trajectories, mean meta-loss, mean final loss, applied)."""
        trajectories, meta_loss, final_loss, applied = self._train_unroll(trajectories)
        return trajectories, float(meta_loss), float(final_loss), bool(applied)

    def _replica_unroll(self, trajectories):
        trainer, optimizees = self.trainer, optimizees_of(self.strategy, self.count, replica_id())
        with tf.GradientTape() as tape:
            results = [trainer._forward(t, tape, rng=self.rngs[k], rule=self.rules[k])
                       for k, t in zip(optimizees, trajectories)]
            objective = mean([r[4] for r in results])
        gradients = meta.meta_gradients(tape, objective, trainer.variables)
        carried = [t._replace(params=r[2], state=r[3]) for t, r in zip(trajectories, results)]
        return carried, (gradients, mean([r[0] for r in results]), mean([r[1] for r in results]))

    def _unroll(self, trajectories):
        carried, (gradients, meta_loss, final_loss) = mean_over_replicas(self.strategy, self._replica_unroll,
                                                                         trajectories)
        applied = meta.apply_if_finite(self.optimizer, gradients, self.variables, meta_loss)
        return carried, meta_loss, final_loss, applied


def replica_id():
    """This replica's id in the sync group, as a Python int (it is a constant in every strategy used here)."""
    replica = tf.get_static_value(tf.distribute.get_replica_context().replica_id_in_sync_group)
    if replica is None:
        raise ValueError("the replica id is not a constant under this strategy")
    return int(replica)


def mean(values):
    """The mean of `values`; one value as it is (so one optimizee per replica computes exactly today's numbers)."""
    return values[0] if len(values) == 1 else tf.add_n(values) / float(len(values))
