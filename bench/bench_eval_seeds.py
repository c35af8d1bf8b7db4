#!/usr/bin/env python
"""Evaluating several seeds together (`meta.Runs`, one compiled loop) against one after another (`meta.Runner`).

    python bench/bench_eval_seeds.py           # about 3 minutes on 2 CPU cores
    python bench/bench_eval_seeds.py --quick   # smoke run

On the mnist MLP (the embedded sample, which the timing does not depend on), for L2O-DM (one coordinate-wise rule:
`Runs` steps it once on all seeds' coordinates), Adam (the same) and LGL2O around L2O-DM (a guard per seed: each
seed steps its own rule in the shared loop), with S seeds:

  * steady: S runs of a warm `Runner` (compiled once, its generator reset per seed, as `l2o_scale.metatest` does)
    against one warm `Runs` call over the S seeds, same steps; best of --repeats interleaved rounds;
  * end to end: `evaluate.evaluate` once per seed (a new compiled loop each, as the harness did) against one
    `evaluate.evaluate_runs` call, compilation included; one round each.

The ratios are one-after-another time / together time (> 1: together is faster).
"""
import os

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import argparse  # noqa: E402
import time  # noqa: E402

from l2o_tf import datasets, evaluate, guards, meta, models, optimizers, problems, seeding  # noqa: E402


def optimizer_lanes(problem, name, seeds):
    """[(problem, rule, seed)] for one optimizer over `seeds` (a guard gets one rule and problem view per seed)."""
    if name == "lgl2o(dm)":
        learned = models.load("dm")
        lanes = []
        for seed in seeds:
            rule, view = guards.guard_problem(problem, learned, seed, "lgl2o", guard_optimizer="sgd",
                                              guard_learning_rate=1.0)
            lanes.append((view, rule, seed))
        return lanes
    rule = models.load("dm") if name == "dm" else optimizers.Adam(0.01)
    return [(problem, rule, seed) for seed in seeds]


def steady_one_after_another(lanes, steps):
    runners = [meta.Runner(problem, rule, seeding.generator(seed)) for problem, rule, seed in lanes]

    def run():
        for runner, (_, _, seed) in zip(runners, lanes):
            seeding.reset(runner.rng, seed)
            runner.run(runner.new_trajectory(), steps)
    return run


def steady_together(lanes, steps):
    generators = [seeding.generator(seed) for _, _, seed in lanes]
    runs = meta.Runs([(problem, rule, rng) for (problem, rule, _), rng in zip(lanes, generators)])

    def run():
        for rng, (_, _, seed) in zip(generators, lanes):
            seeding.reset(rng, seed)
        runs.trajectories = [meta.new_trajectory(problem, rule, rng) for (problem, rule, _), rng in
                             zip(lanes, generators)]
        runs.run(steps)
    return run


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="evaluation steps per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 3], help="numbers of seeds S to compare")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of the steady measurement")
    parser.add_argument("--quick", action="store_true", help="smoke run: 100 steps, S = 2, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.seeds, args.repeats = 100, [2], 1
    sample = datasets.embedded_sample("test")
    problem = problems.get("mnist", mode="test", dataset=(sample.images, sample.labels))
    print(f"mnist MLP ({problem.num_params} parameters), {args.steps} steps per run; ms per step and seed")
    print(f"{'optimizer':<10} {'S':>2} | {'steady alone':>12} {'together':>9} {'ratio':>6} | "
          f"{'end-to-end alone':>16} {'together':>9} {'ratio':>6}")
    for name in ("dm", "adam", "lgl2o(dm)"):
        for count in args.seeds:
            seeds = list(range(count))
            lanes = optimizer_lanes(problem, name, seeds)
            # end to end first: fresh compiled loops, as a user's evaluation pays them
            alone_e2e = timed(lambda: [evaluate.evaluate(p, r, args.steps, 1, s) for p, r, s in lanes])
            together_e2e = timed(lambda: evaluate.evaluate_runs(lanes, args.steps, 1))
            alone, together = steady_one_after_another(lanes, args.steps), steady_together(lanes, args.steps)
            alone(), together()  # warm-up (tracing, compilation)
            best_alone = best_together = float("inf")
            for _ in range(args.repeats):
                best_alone = min(best_alone, timed(alone))
                best_together = min(best_together, timed(together))
            per = 1000.0 / (count * args.steps)
            print(f"{name:<10} {count:>2} | {best_alone * per:>12.3f} {best_together * per:>9.3f} "
                  f"{best_alone / best_together:>6.2f} | {alone_e2e * per:>16.3f} {together_e2e * per:>9.3f} "
                  f"{alone_e2e / together_e2e:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
