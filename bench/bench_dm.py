#!/usr/bin/env python
"""L2O-DM on the MNIST MLP: meta-iterations/s and evaluation steps/s against this machine's FLOP-bound floor.

    python bench/bench_dm.py            # about 70-90 s on 2 CPU cores
    python bench/bench_dm.py --quick    # smoke run, about 25 s

What is timed, after a warm-up call of each compiled function (tracing, graph optimisation):
  * a meta-iteration: `meta.Trainer.train_unroll`, 20 optimizee steps + meta-backprop + meta-Adam in one graph;
  * an evaluation step: `meta.Runner.run`, 2000 steps in one compiled while-loop (chunk = 2000);
  * for context, a plain meta-iteration written naively (nested tapes, the meta-loss sum_t f(x_t) differentiated
    through the optimizee a second time) instead of `meta.Trainer`'s surrogate objective.
Each is run once per round, the rounds interleaved with numpy's GEMM timings, and the best round is kept, so that
load from other processes on the machine inflates no measurement more than the others.

The floor counts matmul FLOPs only (formulas below and in bench/README.md) and divides them by the float32 rate
that numpy (OpenBLAS) reaches, in this same run, on exactly the GEMMs of that work: the same shapes and
transposes, run back to back as one step runs them (the "shape-matched rate"); equivalently, the floor is numpy's
own time for those GEMMs. Elementwise work (sigmoid/tanh/products on [n, 20..80] gate arrays, split/concat copies,
LogAndSign, the softmax) is not in the floor. fraction = floor time / measured time; 1.0 = as fast as the GEMMs.
The last line of the output is `meta_fraction=<x> eval_fraction=<y>`.
"""
import os

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import argparse  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from l2o_tf import meta, networks, problems  # noqa: E402

UNROLL = 20  # optimizee steps per meta-iteration (the paper's truncation)


# ---------------------------------------------------------------------------------------------------------------
# FLOP counting. A GEMM is (name, M, K, N, transpose_a, transpose_b): C[M, N] = op(A) @ op(B), 2*M*K*N FLOPs.
# The same lists drive the numpy timing, so the counted FLOPs and the timed work are one and the same.
#
# Optimizee, an MLP with layers (k_in -> k_out), batch B = 128 (mnist: 784 -> 20 -> 10, sigmoid between):
#   forward   per layer  X[B, k_in] @ W[k_in, k_out]                      2*B*k_in*k_out
#   backward  per layer  dW = X^T[k_in, B] @ dZ[B, k_out]                 2*B*k_in*k_out
#             layers > 1 dX = dZ[B, k_out] @ W^T[k_out, k_in]             2*B*k_in*k_out
#             (no input gradient for the first layer: the images are constants)
#   mnist: fwd = 2*128*(784*20 + 20*10) = 4,065,280; bwd = 2*128*(784*20 + 20*10 + 20*10) = 4,116,480.
# Network (L2O-DM, per step, n = 15,910 coordinates as batch rows; LSTM l has input i_l, hidden h = 20,
# gates [n, i_l + h] @ [i_l + h, 4h]; i_1 = 2 LogAndSign features, i_2 = 20):
#   forward   LSTM1 2*n*(22*80) + LSTM2 2*n*(40*80) + linear 2*n*(20*1) = 2*n*4980 = 158.5 MFLOP
#   backward  per GEMM: input gradient dZ @ W^T and weight gradient X^T @ dZ, each as many FLOPs as the forward
#             GEMM: backward = 2 x forward = 316.9 MFLOP. (TF computes the full [n, 22] input gradient of the
#             first LSTM though only its 20 h columns are needed: 1.6% of the backward is strictly avoidable.)
# Per meta-iteration (second_derivatives=False, surrogate objective): 21 optimizee loss+grad evaluations,
#   20 network forwards and 20 network backwards = 21*8.18 M + 20*475.4 M = 9.68 GFLOP.
# Per evaluation step (Runner): 1 optimizee loss+grad + 1 network forward + 1 optimizee forward (the recorded
#   loss on a fresh batch) = 8.18 + 158.5 + 4.07 = 170.7 MFLOP.
# Not counted: elementwise ops (per LSTM step and coordinate: 3 sigmoid, 2 tanh, ~6 mul/add on 20-wide rows,
#   their backward, LogAndSign, x += delta), the minibatch gather, softmax cross-entropy, meta-Adam.
# ---------------------------------------------------------------------------------------------------------------

def mlp_layers(problem):
    """(k_in, k_out) of each dense layer of an MLP problem, from its weight shapes."""
    return [tuple(shape) for shape in problem.param_shapes if len(shape) == 2]


def optimizee_forward_gemms(problem, batch=problems.BATCH_SIZE):
    return [(f"opt fwd L{i}", batch, k_in, k_out, False, False)
            for i, (k_in, k_out) in enumerate(mlp_layers(problem), start=1)]


def optimizee_backward_gemms(problem, batch=problems.BATCH_SIZE):
    gemms = []
    for i, (k_in, k_out) in reversed(list(enumerate(mlp_layers(problem), start=1))):
        gemms.append((f"opt dW L{i}", k_in, batch, k_out, True, False))
        if i > 1:
            gemms.append((f"opt dX L{i}", batch, k_out, k_in, False, True))
    return gemms


def network_layers(cell):
    """(name, rows-in, cols-out) of the cell's GEMMs per coordinate: LSTMs [i+h -> 4h], then linear [h -> 1]."""
    layers, size = [], cell.feature_size
    for index, hidden in enumerate(cell.hidden_sizes, start=1):
        layers.append((f"lstm{index}", size + hidden, 4 * hidden))
        size = hidden
    layers.append(("linear", size, 1))
    return layers


def network_forward_gemms(cell, n):
    return [(f"net fwd {name}", n, k, m, False, False) for name, k, m in network_layers(cell)]


def network_backward_gemms(cell, n):
    gemms = []
    for name, k, m in reversed(network_layers(cell)):
        gemms.append((f"net dX {name}", n, m, k, False, True))   # dZ[n, m] @ W^T[m, k]
        gemms.append((f"net dW {name}", k, n, m, True, False))   # X^T[k, n] @ dZ[n, m]
    return gemms


def flops(gemms):
    return sum(2 * m * k * n for _, m, k, n, _, _ in gemms)


# ---------------------------------------------------------------------------------------------------------------
# numpy GEMM rates
# ---------------------------------------------------------------------------------------------------------------

VARIANTS = ("view", "contiguous", "outer")


def gemm_call(gemm, variant, rng):
    """A zero-argument function computing one GEMM with numpy into a preallocated output, or None when `variant`
    does not apply. "view": a transposed operand is a transposed view (BLAS gets the transpose flag, as TF's
    MatMul does); "contiguous": it is stored already transposed; "outer": K = 1, a broadcast product (OpenBLAS is
    slow on rank-1 GEMMs, and the floor should not charge TF for that)."""
    _, m, k, n, trans_a, trans_b = gemm
    a = rng.standard_normal((k, m) if trans_a else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n), dtype=np.float32)
    a, b = (a.T if trans_a else a), (b.T if trans_b else b)
    out = np.empty((m, n), np.float32)
    if variant == "view":
        return lambda: np.matmul(a, b, out=out)
    if variant == "contiguous":
        if not (trans_a or trans_b):
            return None
        a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
        return lambda: np.matmul(a, b, out=out)
    if variant == "outer" and k == 1:
        return lambda: np.multiply(a, b, out=out)
    return None


def best_time(fn, repeats, min_seconds):
    """Best per-call seconds over `repeats` timed loops, each loop long enough to last about `min_seconds`."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    loops = max(1, int(math.ceil(min_seconds / once)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        best = min(best, (time.perf_counter() - start) / loops)
    return best


class NumpyGemms:
    """numpy's best float32 time for each GEMM alone (operands hot in cache, its fastest layout variant) and for
    each block of GEMMs run back to back, as one step runs them (operands partly evicted by the previous GEMMs)."""

    def __init__(self, blocks, seed=0):
        self.blocks, self.rng = blocks, np.random.default_rng(seed)
        self.gemm_seconds, self.variant, self.block_seconds, self.calls = {}, {}, {}, {}

    def choose_variants(self, repeats=3, min_seconds=0.02):
        for gemms in self.blocks.values():
            for gemm in gemms:
                for variant in VARIANTS:
                    call = gemm_call(gemm, variant, self.rng)
                    if call is None:
                        continue
                    seconds = best_time(call, repeats, min_seconds)
                    if seconds < self.gemm_seconds.get(gemm[0], float("inf")):
                        self.gemm_seconds[gemm[0]], self.variant[gemm[0]], self.calls[gemm[0]] = \
                            seconds, variant, call

    def measure(self, repeats=4, min_seconds=0.05):
        """Times every GEMM alone and every block once more; keeps the best of all measurements."""
        for name, gemms in self.blocks.items():
            calls = [self.calls[gemm[0]] for gemm in gemms]
            for gemm, call in zip(gemms, calls):
                self.gemm_seconds[gemm[0]] = min(self.gemm_seconds[gemm[0]], best_time(call, 1, min_seconds / 2))

            def run(calls=calls):
                for call in calls:
                    call()

            seconds = best_time(run, repeats, min_seconds)
            self.block_seconds[name] = min(self.block_seconds.get(name, float("inf")), seconds)

    def block_sum(self, name):
        """The block's time as the sum of its GEMMs each timed alone (hot cache): the "hot-cache" floor."""
        return sum(self.gemm_seconds[gemm[0]] for gemm in self.blocks[name])


# ---------------------------------------------------------------------------------------------------------------
# The plain baseline: the same unroll written naively, meta-loss sum_t f(x_t) differentiated through the optimizee.
# ---------------------------------------------------------------------------------------------------------------

class PlainTrainer:
    """What `meta.Trainer` would be without its surrogate: every f(x_t) is differentiated twice, once by an inner
    tape for the update rule's input g_t (under stop_gradient, as second_derivatives=False), and once more by the
    outer tape, which backpropagates the meta-loss through the optimizee into x_t. Same unroll otherwise (a Python
    loop inside one tf.function), meta-Adam applied unconditionally."""

    def __init__(self, problem, cell, rng, learning_rate=1e-3, unroll_length=UNROLL):
        self.problem, self.cell, self.rng, self.unroll_length = problem, cell, rng, unroll_length
        self.variables, self.optimizer = meta.meta_optimizer(cell, learning_rate)
        self._unroll_fn = tf.function(self._unroll, reduce_retracing=True)

    def new_trajectory(self):
        return meta.new_trajectory(self.problem, self.cell, self.rng)

    def train_unroll(self, trajectory):
        params, state, meta_loss = self._unroll_fn(trajectory)
        return trajectory._replace(params=params, state=state), float(meta_loss)

    def _unroll(self, trajectory):
        params, state, constants, scale = trajectory
        params = list(params)
        with tf.GradientTape() as outer:
            losses = []
            for step in range(self.unroll_length + 1):
                with tf.GradientTape() as inner:
                    inner.watch(params)
                    loss = self.problem.loss(meta.scaled(params, scale), constants, self.rng)
                gradients = [tf.stop_gradient(g) for g in inner.gradient(loss, params)]
                losses.append(loss)
                if step < self.unroll_length:
                    deltas, state = self.cell.step(gradients, state)
                    params = meta.add(params, deltas)
            meta_loss = tf.add_n(losses)
        gradients = outer.gradient(meta_loss, self.variables)
        self.optimizer.apply_gradients(zip(gradients, self.variables))
        return params, state, meta_loss


# ---------------------------------------------------------------------------------------------------------------

class Timed:
    """A benchmarked operation: `once()` runs `units` of it (and syncs); `best` keeps the fastest seconds per unit."""

    def __init__(self, name, run, state, units, warm_up_units):
        self.name, self._run, self.state, self.units = name, run, state, units
        self.warm_up_units, self.best = warm_up_units, float("inf")

    def warm_up(self):
        """The first call traces and optimises the graph; later calls with any count reuse it."""
        self.state = self._run(self.state, self.warm_up_units)

    def once(self):
        start = time.perf_counter()
        self.state = self._run(self.state, self.units)
        seconds = (time.perf_counter() - start) / self.units
        self.best = min(self.best, seconds)
        return seconds


def meta_iterations(trainer):
    """run(trajectory, k): k meta-iterations; `train_unroll` returns Python floats, so each one syncs."""
    def run(trajectory, k):
        for _ in range(k):
            trajectory = trainer.train_unroll(trajectory)[0]
        return trajectory
    return run


def evaluation_steps(runner):
    """run(trajectory, k): k evaluation steps in ONE compiled while-loop (chunk = k), losses fetched to numpy."""
    def run(trajectory, k):
        return runner.run(trajectory, k, chunk=k)[0]
    return run


def cpu_name():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--meta-iterations", type=int, default=10, help="meta-iterations per timed run")
    parser.add_argument("--eval-steps", type=int, default=2000, help="evaluation steps per timed run (one chunk)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed rounds; the best round of each measurement is kept")
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain (no-surrogate) baseline")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 meta-iterations, 100 eval steps")
    args = parser.parse_args()
    if args.quick:
        args.meta_iterations, args.eval_steps, args.repeats = 2, 100, 2
    wall_start = time.perf_counter()

    problem = problems.get("mnist", mode="train")
    cell = networks.CoordinateWiseDeepLSTM(seed=0)
    cell.build()
    n = problem.num_params

    # -- FLOPs ----------------------------------------------------------------------------------------------
    opt_fwd, opt_bwd = optimizee_forward_gemms(problem), optimizee_backward_gemms(problem)
    net_fwd, net_bwd = network_forward_gemms(cell, n), network_backward_gemms(cell, n)
    loss_grad_flops = flops(opt_fwd) + flops(opt_bwd)
    meta_flops = (UNROLL + 1) * loss_grad_flops + UNROLL * (flops(net_fwd) + flops(net_bwd))
    eval_flops = loss_grad_flops + flops(net_fwd) + flops(opt_fwd)

    print(f"l2o-tf L2O-DM benchmark: problem mnist (MLP {'-'.join(str(k) for k, _ in mlp_layers(problem))}-"
          f"{mlp_layers(problem)[-1][1]}, batch {problems.BATCH_SIZE}), n = {n} parameters; "
          f"CoordinateWiseDeepLSTM {cell.feature_size}->{'->'.join(map(str, cell.hidden_sizes))}->1; "
          f"unroll {UNROLL}")
    print(f"machine: {os.cpu_count()} CPU cores ({cpu_name()}), TensorFlow {tf.__version__}, numpy {np.__version__}")
    print()
    print("Counted FLOPs (matmul only, multiply-add = 2 FLOPs; elementwise ops are not in the floor):")
    print(f"  optimizee forward      2*B*(784*20 + 20*10)            {flops(opt_fwd) / 1e6:10.3f} MFLOP")
    print(f"  optimizee backward     2*B*(784*20 + 20*10 + 20*10)    {flops(opt_bwd) / 1e6:10.3f} MFLOP")
    print(f"  network forward        2*n*(22*80 + 40*80 + 20*1)      {flops(net_fwd) / 1e6:10.3f} MFLOP")
    print(f"  network backward       2 x forward                     {flops(net_bwd) / 1e6:10.3f} MFLOP")
    print(f"  meta-iteration         21 x (opt fwd+bwd) + 20 x (net fwd+bwd)  {meta_flops / 1e9:8.3f} GFLOP")
    print(f"  evaluation step        (opt fwd+bwd) + net fwd + opt fwd        {eval_flops / 1e6:8.3f} MFLOP")
    print()

    # -- set up and warm up (the first call of each compiled function traces and optimises its graph) ----------
    blocks = {"optimizee forward": opt_fwd, "optimizee backward": opt_bwd,
              "network forward": net_fwd, "network backward": net_bwd}
    gemms = NumpyGemms(blocks)
    print("Measuring numpy float32 GEMMs (each shape, each layout variant) ...", flush=True)
    gemms.choose_variants()
    gemms.measure()
    square = gemm_call(("square", 1024, 1024, 1024, False, False), "view", gemms.rng)
    square_seconds = best_time(square, 5, 0.2)

    print("Tracing and warming up ...", flush=True)
    trainer = meta.Trainer(problem, cell, tf.random.Generator.from_seed(0), learning_rate=1e-3,
                           unroll_length=UNROLL)
    runner = meta.Runner(problem, cell, tf.random.Generator.from_seed(1))
    timed = [Timed("meta-iteration", meta_iterations(trainer), trainer.new_trajectory(), args.meta_iterations, 2),
             Timed("evaluation step", evaluation_steps(runner), runner.new_trajectory(), args.eval_steps, 50)]
    if not args.no_baseline:
        plain = PlainTrainer(problem, networks.CoordinateWiseDeepLSTM(seed=0), tf.random.Generator.from_seed(2))
        timed.append(Timed("plain meta-iteration", meta_iterations(plain), plain.new_trajectory(),
                           args.meta_iterations, 2))
    for op in timed:
        op.warm_up()

    # -- timed rounds: every measurement once per round, interleaved, so that a burst of load from other processes
    # hits them alike; the best round of each is kept --------------------------------------------------------------
    for r in range(1, args.repeats + 1):
        line = []
        for op in timed:
            line.append(f"{op.name} {op.once() * 1e3:.2f} ms")
        gemms.measure()
        print(f"  round {r}/{args.repeats}: " + ", ".join(line), flush=True)
    meta_seconds, eval_seconds = timed[0].best, timed[1].best
    plain_seconds = None if args.no_baseline else timed[2].best

    # -- floors ---------------------------------------------------------------------------------------------
    def floors(seconds):
        """(meta floor, eval floor) from per-block seconds: the counts of each block in one op."""
        opt = seconds["optimizee forward"] + seconds["optimizee backward"]
        meta_floor = (UNROLL + 1) * opt + UNROLL * (seconds["network forward"] + seconds["network backward"])
        return meta_floor, opt + seconds["optimizee forward"] + seconds["network forward"]

    t = gemms.block_seconds
    meta_floor, eval_floor = floors(t)
    meta_hot, eval_hot = floors({name: gemms.block_sum(name) for name in blocks})
    meta_rate, eval_rate = meta_flops / meta_floor, eval_flops / eval_floor
    print()
    print("numpy float32 GEMMs, best of repeated runs (OpenBLAS, all cores; fastest layout variant of each):")
    print(f"  {'GEMM  C[M,N] = op(A)[M,K] op(B)[K,N]':34s} {'M':>6s} {'K':>6s} {'N':>6s} {'variant':>11s} "
          f"{'us':>9s} {'GFLOP/s':>8s}")
    for block in blocks.values():
        for name, m, k, nn, trans_a, trans_b in block:
            label = f"{name}{'  (A^T)' if trans_a else ''}{'  (B^T)' if trans_b else ''}"
            sec = gemms.gemm_seconds[name]
            print(f"  {label:34s} {m:6d} {k:6d} {nn:6d} {gemms.variant[name]:>11s} {sec * 1e6:9.1f} "
                  f"{2 * m * k * nn / sec / 1e9:8.2f}")
    print(f"  {'blocks (their GEMMs back to back)':34s} {'':33s} {'us':>9s} {'GFLOP/s':>8s} {'alone':>8s}")
    for name, block in blocks.items():
        print(f"  {name:34s} {'':33s} {t[name] * 1e6:9.1f} {flops(block) / t[name] / 1e9:8.2f} "
              f"{flops(block) / gemms.block_sum(name) / 1e9:8.2f}")
    print(f"  {'square 1024 x 1024 x 1024 (context)':34s} {'':33s} {square_seconds * 1e6:9.1f} "
          f"{2 * 1024 ** 3 / square_seconds / 1e9:8.2f}")
    print("  ('alone': the block's GEMMs each timed alone, operands hot in cache; back to back is what one step does)")
    print()
    print("FLOOR: counted FLOPs / the shape-matched rate, i.e. numpy's time for exactly the GEMMs of the op, blocks")
    print("back to back: meta = 21 x (opt fwd + opt bwd) + 20 x (net fwd + net bwd); eval = 2 x opt fwd + opt bwd +")
    print("net fwd. The square-matmul rate is NOT used.")
    print(f"  shape-matched rate, meta-iteration GEMM set:  {meta_rate / 1e9:6.2f} GFLOP/s -> meta floor "
          f"{meta_floor * 1e3:8.3f} ms")
    print(f"  shape-matched rate, evaluation-step GEMM set: {eval_rate / 1e9:6.2f} GFLOP/s -> eval floor "
          f"{eval_floor * 1e3:8.3f} ms")
    print()

    meta_fraction, eval_fraction = meta_floor / meta_seconds, eval_floor / eval_seconds
    print(f"  {'':18s} {'rate':>16s} {'time/op':>12s} {'FLOPs':>12s} {'floor time':>12s} {'achieved':>12s} "
          f"{'fraction':>9s}")
    print(f"  {'meta-iteration':18s} {1 / meta_seconds:10.3f} it/s {meta_seconds * 1e3:9.2f} ms "
          f"{meta_flops / 1e9:6.3f} GFLOP {meta_floor * 1e3:9.2f} ms {meta_flops / meta_seconds / 1e9:6.2f} GFLOP/s "
          f"{meta_fraction:9.3f}")
    print(f"  {'evaluation step':18s} {1 / eval_seconds:8.1f} steps/s {eval_seconds * 1e3:9.3f} ms "
          f"{eval_flops / 1e6:6.1f} MFLOP {eval_floor * 1e3:9.3f} ms {eval_flops / eval_seconds / 1e9:6.2f} GFLOP/s "
          f"{eval_fraction:9.3f}")
    print("  (fraction = floor time / measured time; 1.0 would be as fast as numpy running the same GEMMs)")
    print(f"  against the hot-cache floor (each GEMM timed alone): meta {meta_hot * 1e3:.2f} ms -> "
          f"{meta_hot / meta_seconds:.3f}, eval {eval_hot * 1e3:.3f} ms -> {eval_hot / eval_seconds:.3f}")
    if plain_seconds is not None:
        print()
        print(f"  plain baseline (nested tapes, no surrogate): {1 / plain_seconds:.3f} it/s, "
              f"{plain_seconds * 1e3:.2f} ms/it; meta.Trainer is {plain_seconds / meta_seconds:.2f}x its speed")
    print()
    print(f"total benchmark wall time {time.perf_counter() - wall_start:.0f} s")
    print(f"meta_fraction={meta_fraction:.3f} eval_fraction={eval_fraction:.3f}")


if __name__ == "__main__":
    main()
