#!/usr/bin/env python
"""Batch norm of the conv problems: the fused kernel (`problems._layers_batch_norm`, what TF1's tf.layers ran)
against the composite moments + batch_normalization (`problems._batch_norm`, what we used before 2026-12-06).

    python bench/bench_conv_bn.py            # about a minute on 2 CPU cores
    python bench/bench_conv_bn.py --quick    # smoke run

On `mnist_conv` (the embedded MNIST sample) and `cifar_conv` (random data of CIFAR-10's shape; the timing does not
depend on the pixels), an evaluation step (`meta.Runner`: the optimizee's loss and gradient, the update, the loss
on a fresh minibatch) of the shipped L2O-DM-CL-IL and of Adam, each compiled once per variant; best of --repeats
interleaved rounds. Also each variant's error in the loss gradient at the initial point, against the composite
computed in float64 (||g - g64|| / ||g64||): both compute the same function, so both errors are rounding. (Their
trajectories part after a few steps all the same: Adam's and the L2O's first steps take the sign of gradients
that are rounding noise, those of the conv biases, which the batch norm cancels.)
"""
import os

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from l2o_tf import datasets, meta, models, optimizers, problems, seeding  # noqa: E402


@contextlib.contextmanager
def composite_batch_norm():
    """Trace the conv problems with the composite batch norm instead of the fused kernel."""
    fused = problems._layers_batch_norm
    problems._layers_batch_norm = problems._batch_norm
    try:
        yield
    finally:
        problems._layers_batch_norm = fused


def make_problem(name):
    if name == "mnist_conv":
        sample = datasets.embedded_sample("test")
        return problems.get(name, mode="test", dataset=(sample.images, sample.labels))
    rng = np.random.RandomState(0)
    images = rng.uniform(0.0, 1.0, (2000, 32, 32, 3)).astype(np.float32)
    return problems.get(name, mode="test", dataset=(images, rng.randint(0, 10, 2000).astype(np.int64)))


def gradient_errors(problem):
    """Relative error of the fused and the composite float32 gradient, against the composite in float64."""
    params = problem.init_params(seeding.generator(0))
    images, labels = problem.sample_batch(seeding.generator(1))

    def gradient(dtype, variant):
        with variant():
            cast = [tf.cast(p, dtype) for p in params]
            with tf.GradientTape() as tape:
                tape.watch(cast)
                loss = problem.batch_loss(cast, tf.cast(images, dtype), labels)
            return np.concatenate([np.ravel(g) for g in tape.gradient(loss, cast)]).astype(np.float64)
    exact = gradient(tf.float64, composite_batch_norm)
    return [np.linalg.norm(gradient(tf.float32, variant) - exact) / np.linalg.norm(exact)
            for variant in (composite_batch_norm, contextlib.nullcontext)]


def timed_runner(problem, rule, steps, variant):
    """A function running `steps` steps of a warm runner of one variant from the same start."""
    runner = meta.Runner(problem, rule, seeding.generator(0))

    def run():
        with variant():
            seeding.reset(runner.rng, 0)
            runner.run(runner.new_trajectory(), steps)
    run()  # tracing and graph optimisation
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="evaluation steps per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--problems", nargs="+", default=["mnist_conv", "cifar_conv"])
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 steps, 1 round, mnist_conv")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats, args.problems = 3, 1, ["mnist_conv"]
    print(f"ms per evaluation step, best of {args.repeats} rounds of {args.steps} steps")
    print(f"{'problem':<11} {'optimizer':<9} | {'composite':>9} {'fused':>7} {'ratio':>6} | gradient error: composite, fused")
    for name in args.problems:
        problem = make_problem(name)
        errors = gradient_errors(problem)
        for label, rule in (("dm_cl_il", models.load("dm_cl_il")), ("Adam", optimizers.Adam(0.01))):
            composite = timed_runner(problem, rule, args.steps, composite_batch_norm)
            fused = timed_runner(problem, rule, args.steps, contextlib.nullcontext)
            best = {"composite": float("inf"), "fused": float("inf")}
            for _ in range(args.repeats):
                for variant, run in (("composite", composite), ("fused", fused)):
                    start = time.perf_counter()
                    run()
                    best[variant] = min(best[variant], time.perf_counter() - start)
            per = 1000.0 / args.steps
            print(f"{name:<11} {label:<9} | {best['composite'] * per:>9.1f} {best['fused'] * per:>7.1f} "
                  f"{best['composite'] / best['fused']:>6.2f} | {errors[0]:.1e}, {errors[1]:.1e}", flush=True)


if __name__ == "__main__":
    main()
