#!/usr/bin/env python
"""L2O-Scale on the MNIST MLP: evaluation steps and meta-iterations against baselines timed in the same run.

    python bench/bench_scale.py            # about 1-2 minutes on 2 CPU cores
    python bench/bench_scale.py --quick    # smoke run

Timed, after a warm-up call of each compiled function, best of `--rounds` interleaved rounds (so that load from
other processes inflates no measurement more than the others):
  * evaluation step: `meta.Runner.run` (XLA-compiled while-loop, `--steps` steps per call) with L2O-Scale, with
    Adam (l2o_tf.optimizers, the plain baseline) and with L2O-DM (l2o_tf's LSTM optimizer) on the same problem;
  * meta-iteration: `meta.Trainer.train_unroll` (20 steps forward, the meta-gradient through them, a meta-Adam
    step) with L2O-Scale and with L2O-DM;
  * the floor: single-threaded numpy's time for the GEMMs of one L2O-Scale evaluation step (the optimizee's forward and backward,
    the recorded loss's forward, and the optimizer's: per tensor the level-0 GRU's [n, 22] x [22, 20] and
    [n, 22] x [22, 10], the readouts [n, 10] x [10, 1] (x4) and [n, 4] x [4, 1]); elementwise work is not in it.
Ratios are reported against these; absolute times depend on the machine and its load.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# one OpenBLAS thread: on a small machine shared with other work, multi-threaded GEMMs on these thin shapes spin and
# measure the load rather than the work (64 ms instead of ~1 ms at load average 8); the floor is then one core's
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from l2o_scale import hierarchical_rnn  # noqa: E402
from l2o_tf import meta, networks, optimizers, problems  # noqa: E402

BATCH = 128


def numpy_step_gemms(problem):
    """(seconds, FLOPs) of numpy doing one evaluation step's GEMMs, back to back, best of 20."""
    rng = np.random.default_rng(0)
    shapes = []
    sizes = [784, 20, 10]
    for k_in, k_out in zip(sizes[:-1], sizes[1:]):  # optimizee: 2 forwards (step, record) and one backward
        shapes += [(BATCH, k_in, k_out)] * 2 + [(k_in, BATCH, k_out)]
    shapes.append((BATCH, 10, 20))  # dX of the second layer
    for shape in problem.param_shapes:
        n = int(np.prod(shape))
        shapes += [(n, 22, 20), (n, 22, 10)] + [(n, 10, 1)] * 4 + [(n, 4, 1)]
    operands = [(rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32))
                for m, k, n in shapes]
    flops = sum(2 * m * k * n for m, k, n in shapes)
    best = float("inf")
    for _ in range(20):
        start = time.perf_counter()
        for a, b in operands:
            np.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return best, flops


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    parser.add_argument("--steps", type=int, default=500, help="evaluation steps per timed call")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    steps, rounds = (100, 2) if args.quick else (args.steps, args.rounds)
    load_at_start = os.getloadavg()[0]

    rng = np.random.default_rng(0)
    data = (rng.uniform(size=(10000, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, 10000).astype(np.int32))
    problem = problems.get("mnist", "test", dataset=data)
    rules = {"scale": hierarchical_rnn.HierarchicalRNN(seed=0), "adam": optimizers.get("Adam", 1e-3),
             "dm": networks.CoordinateWiseDeepLSTM(seed=0)}
    runners = {name: meta.Runner(problem, rule, tf.random.Generator.from_seed(1)) for name, rule in rules.items()}
    trajectories = {name: runner.new_trajectory() for name, runner in runners.items()}
    trainers = {name: meta.Trainer(problem, rules[name], tf.random.Generator.from_seed(2), unroll_length=20)
                for name in ("scale", "dm")}
    meta_trajectories = {name: trainer.new_trajectory() for name, trainer in trainers.items()}
    for name, runner in runners.items():  # warm-up: tracing and compilation
        runner.run(trajectories[name], steps)
    for name, trainer in trainers.items():
        meta_trajectories[name] = trainer.train_unroll(meta_trajectories[name])[0]

    step_ms, meta_ms, floor = {}, {}, (float("inf"), 0)
    for _ in range(rounds):
        for name, runner in runners.items():
            start = time.perf_counter()
            runner.run(trajectories[name], steps)
            step_ms[name] = min(step_ms.get(name, float("inf")), (time.perf_counter() - start) / steps * 1e3)
        for name, trainer in trainers.items():
            start = time.perf_counter()
            meta_trajectories[name] = trainer.train_unroll(meta_trajectories[name])[0]
            meta_ms[name] = min(meta_ms.get(name, float("inf")), (time.perf_counter() - start) * 1e3)
        seconds, flops = numpy_step_gemms(problem)
        floor = (min(floor[0], seconds), flops)

    floor_ms = floor[0] * 1e3
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, TF {tf.__version__}, "
          f"numpy {np.__version__} ({os.environ['OPENBLAS_NUM_THREADS']} BLAS thread); load average "
          f"{load_at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    print(f"problem: mnist MLP 784-20-10, {problem.num_params} parameters, batch {BATCH}; {steps} steps per timed "
          f"evaluation call, best of {rounds} rounds")
    rows = [("L2O-Scale evaluation step", step_ms["scale"], step_ms["scale"], "ms"),
            ("Adam evaluation step (plain baseline)", step_ms["adam"], step_ms["scale"], "ms"),
            ("L2O-DM evaluation step", step_ms["dm"], step_ms["scale"], "ms"),
            (f"numpy GEMMs of one L2O-Scale step ({floor[1] / 1e6:.1f} MFLOP)", floor_ms, step_ms["scale"], "ms"),
            ("L2O-Scale meta-iteration (20 steps, meta-gradient, meta-Adam)", meta_ms["scale"], meta_ms["scale"], "ms"),
            ("L2O-DM meta-iteration", meta_ms["dm"], meta_ms["scale"], "ms"),
            ("20 Adam evaluation steps", 20 * step_ms["adam"], meta_ms["scale"], "ms")]
    print("| | time | L2O-Scale / this |")
    print("|---|---|---|")
    for what, value, scale, unit in rows:
        print(f"| {what} | {value:.3f} {unit} | {scale / value:.2f} |")
    print(f"scale_eval_over_adam={step_ms['scale'] / step_ms['adam']:.2f} "
          f"scale_eval_over_floor={step_ms['scale'] / floor_ms:.2f} "
          f"scale_meta_over_dm={meta_ms['scale'] / meta_ms['dm']:.2f}")

if __name__ == "__main__":
    main()
