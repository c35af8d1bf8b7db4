#!/usr/bin/env python
"""Where an L2O-DM meta-iteration and evaluation step spend their time, op type by op type (tf.profiler).

    python bench/profile_dm.py              # about a minute on 2 CPU cores; run it on a quiet machine

Traces 5 meta-iterations (`meta.Trainer.train_unroll`) and 500 evaluation steps (`meta.Runner`'s loop compiled
without XLA here: XLA's kernels do not show in the trace) of `networks.CoordinateWiseDeepLSTM` on the mnist MLP after
a warm-up, then sums the host-side kernel time of every TensorFlow op by its type (MatMul, Sigmoid, ConcatV2, ...)
and prints each type's share. Ops that only wrap others (function calls, the while loop) are left out so nothing counts twice.
Profiling adds overhead and the shares move with load: read them as approximate.
"""
import os

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import collections  # noqa: E402
import glob  # noqa: E402
import tempfile  # noqa: E402

import tensorflow as tf  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

from l2o_tf import meta, networks, problems, seeding  # noqa: E402

WRAPPERS = {"StatefulPartitionedCall", "PartitionedCall", "While", "StatelessWhile", "If", "StatelessIf",
            "_XlaRun", "_XlaCompile", "XlaLaunch"}


def op_times(trace_dir):
    """{op type: summed seconds} over the host plane's TensorFlow op events of the trace in `trace_dir`."""
    path = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)[0]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name  # "<op name>:<op type>" for a TF op
                if name.count(":") != 1 or name != name.strip():
                    continue  # the executor's own events ("ExecutorState::Process", " __inference_...")
                op_type = name.split(":")[1]
                if op_type.isidentifier() and not op_type.startswith("__") and op_type not in WRAPPERS:
                    totals[op_type] += event.duration_ps * 1e-12
    return totals


def profile(name, run):
    trace_dir = tempfile.mkdtemp(prefix=f"profile_{name}_")
    tf.profiler.experimental.start(trace_dir)
    run()
    tf.profiler.experimental.stop()
    totals = op_times(trace_dir)
    whole = sum(totals.values())
    print(f"\n{name}: {whole:.3f} s of op time")
    for op_type, seconds in totals.most_common(14):
        print(f"  {op_type:<28} {100 * seconds / whole:5.1f} %")


def main():
    problem = problems.get("mnist", mode="train")
    cell = networks.CoordinateWiseDeepLSTM(seed=0)
    trainer = meta.Trainer(problem, cell, seeding.generator(0))
    runner = meta.Runner(problem, cell, seeding.generator(1))
    runner._run = tf.function(runner._loop, reduce_retracing=True)  # without XLA, so that its ops are traced
    trajectory = trainer.new_trajectory()
    trajectory = trainer.train_unroll(trajectory)[0]  # warm-up: tracing and graph optimisation
    evaluation = runner.new_trajectory()
    evaluation = runner.run(evaluation, 500)[0]

    def meta_iterations():
        state = trajectory
        for _ in range(5):
            state = trainer.train_unroll(state)[0]

    profile("meta-iteration (5)", meta_iterations)
    profile("evaluation (500 steps, no XLA)", lambda: runner.run(evaluation, 500))


if __name__ == "__main__":
    main()
