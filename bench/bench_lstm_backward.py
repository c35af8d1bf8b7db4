#!/usr/bin/env python
"""Three ways to run the backward of L2O-DM's network in a meta-iteration, against TensorFlow's own autodiff.

    python bench/bench_lstm_backward.py                 # about 2 minutes on 2 CPU cores; run it on a quiet machine
    python bench/bench_lstm_backward.py --chunks 2048 8192 --rounds 5

With the surrogate meta-gradient (`meta.Trainer`, `second_derivatives=False`) the optimizee's gradients enter the
network under stop_gradient, so the meta-gradient of one unroll is d/dtheta of sum_t <G_t, delta_t(theta)>, with
G_t the (constant) sum of the later gradients. This script times exactly that, the network's part of a
meta-iteration (20 steps over the mnist MLP's n = 15,910 coordinates, random gradients of a realistic size), as:

  * autodiff:    `networks.sonnet_lstm` under one tape (what `meta.Trainer` runs);
  * handwritten: the same LSTM step with a `tf.custom_gradient` backward written with the fused SigmoidGrad and
                 TanhGrad kernels, one concatenation of the four gate gradients, and no other passes;
  * one-sigmoid: a `tf.custom_gradient` step that computes all 80 gate rows with one Sigmoid (the j rows' weights
                 doubled, tanh(j) = 2 sigmoid(2j) - 1) and their gradients with one pass over [80, n];
  * chunked:     the coordinates in chunks of C (the backward of one coordinate is independent of the others), each
                 chunk's 20 steps recomputed under its own tape and its gradients summed, so that a chunk's saved
                 activations fit in cache instead of streaming ~600 MB from memory.

Each variant's meta-gradient is checked against autodiff's first (relative error printed), then all are timed in
interleaved rounds (best of --rounds). Results and their reading: bench/README.md.
"""
import os

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from l2o_tf import networks, problems  # noqa: E402

UNROLL = 20


def through_gates(dgates, xh, w_gates, input_size, dc_previous):
    """The gradients an LSTM step returns, given those of its gate pre-activations `dgates` [4H, n]: inputs, previous
    h and c, weights and biases."""
    dxh = tf.matmul(w_gates, dgates)
    return (dxh[:input_size], dxh[input_size:], dc_previous, tf.matmul(xh, dgates, transpose_b=True),
            tf.reduce_sum(dgates, axis=1))


def handwritten_lstm(inputs, h, c, w_gates, b_gates):
    """`networks.sonnet_lstm` with a hand-written backward in as few elementwise passes as TF's kernels allow."""
    @tf.custom_gradient
    def lstm(inputs, h, c, w_gates, b_gates):
        xh = tf.concat([inputs, h], axis=0)
        i, j, f, o = tf.split(tf.matmul(w_gates, xh, transpose_a=True) + b_gates[:, None], 4, axis=0)
        input_gate, cell_input = tf.sigmoid(i), tf.tanh(j)
        forget_gate, output_gate = tf.sigmoid(f + networks.FORGET_BIAS), tf.sigmoid(o)
        c_new = forget_gate * c + input_gate * cell_input
        tanh_c = tf.tanh(c_new)

        def backward(dh, dc):
            dc = dc + tf.raw_ops.TanhGrad(y=tanh_c, dy=dh * output_gate)
            dgates = tf.concat([tf.raw_ops.SigmoidGrad(y=input_gate, dy=dc * cell_input),
                                tf.raw_ops.TanhGrad(y=cell_input, dy=dc * input_gate),
                                tf.raw_ops.SigmoidGrad(y=forget_gate, dy=dc * c),
                                tf.raw_ops.SigmoidGrad(y=output_gate, dy=dh * tanh_c)], axis=0)
            return through_gates(dgates, xh, w_gates, inputs.shape[0], dc * forget_gate)

        return (tanh_c * output_gate, c_new), backward

    return lstm(inputs, h, c, w_gates, b_gates)


def one_sigmoid_lstm(inputs, h, c, w_gates, b_gates):
    """The LSTM step with one Sigmoid over all gate rows and one pass for their gradients."""
    hidden = h.shape[0]
    row_scale = tf.constant(np.r_[np.ones(hidden), np.full(hidden, 2.0), np.ones(2 * hidden)], tf.float32)
    row_shift = tf.constant(np.r_[np.zeros(2 * hidden), np.full(hidden, networks.FORGET_BIAS), np.zeros(hidden)],
                            tf.float32)

    @tf.custom_gradient
    def lstm(inputs, h, c, w_gates, b_gates):
        xh = tf.concat([inputs, h], axis=0)
        gates = tf.matmul(w_gates * row_scale, xh, transpose_a=True) + (b_gates * row_scale + row_shift)[:, None]
        sigmoids = tf.sigmoid(gates)
        input_gate, doubled, forget_gate, output_gate = tf.split(sigmoids, 4, axis=0)
        cell_input = 2.0 * doubled - 1.0
        c_new = forget_gate * c + input_gate * cell_input
        tanh_c = tf.tanh(c_new)

        def backward(dh, dc):
            dc = dc + tf.raw_ops.TanhGrad(y=tanh_c, dy=dh * output_gate)
            dsigmoids = tf.concat([dc * cell_input, 2.0 * dc * input_gate, dc * c, dh * tanh_c], axis=0)
            dgates = tf.raw_ops.SigmoidGrad(y=sigmoids, dy=dsigmoids) * row_scale[:, None]
            return through_gates(dgates, xh, w_gates, inputs.shape[0], dc * forget_gate)

        return (tanh_c * output_gate, c_new), backward

    return lstm(inputs, h, c, w_gates, b_gates)


class NetworkUnroll:
    """The network's part of a meta-iteration: sum_t <G_t, delta_t> over 20 steps of `cell`."""

    def __init__(self, cell, gradients, later_sums):
        self.cell, self.gradients, self.later_sums = cell, gradients, later_sums
        self.variables = cell.trainable_variables

    def objective(self, begin, end):
        state, total = self.cell.flat_initial_state(end - begin), 0.0
        for t in range(UNROLL):
            delta, state = self.cell.flat_step(self.gradients[t, begin:end], state)
            total += tf.reduce_sum(self.later_sums[t, begin:end] * delta)
        return total

    def meta_gradient(self, chunk=None):
        """A compiled function returning d objective / d variables, over all coordinates or chunk by chunk."""
        n = self.gradients.shape[-1]
        bounds = list(range(0, n, chunk or n)) + [n]

        @tf.function
        def run():
            total = [tf.zeros_like(v) for v in self.variables]
            for begin, end in zip(bounds[:-1], bounds[1:]):
                with tf.GradientTape() as tape:
                    objective = self.objective(begin, end)
                total = [a + g for a, g in zip(total, tape.gradient(objective, self.variables))]
            return total

        return run


def cell_with(lstm_step):
    """L2O-DM's network with the same (seeded) weights as every other variant, stepping its LSTMs with `lstm_step`."""
    cell = networks.CoordinateWiseDeepLSTM(seed=1)
    cell.lstm_step = lstm_step
    cell.build()
    return cell


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, nargs="*", default=[2048, 8192], help="coordinate chunk sizes")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (best kept)")
    args = parser.parse_args()

    problem = problems.get("mnist")
    n = problem.num_params
    rng = np.random.default_rng(0)
    gradients = tf.constant(rng.standard_normal((UNROLL, n), dtype=np.float32) * 1e-3)
    later_sums = tf.constant(np.cumsum(gradients.numpy()[::-1], axis=0)[::-1].copy())

    def variant(lstm_step, chunk=None):
        return NetworkUnroll(cell_with(lstm_step), gradients, later_sums).meta_gradient(chunk)

    variants = {"autodiff": variant(networks.sonnet_lstm),
                "handwritten": variant(handwritten_lstm),
                "one-sigmoid": variant(one_sigmoid_lstm)}
    for chunk in args.chunks:
        variants[f"chunked {chunk}"] = variant(networks.sonnet_lstm, chunk)
        variants[f"chunked {chunk} + handwritten"] = variant(handwritten_lstm, chunk)

    print(f"network part of a meta-iteration: {UNROLL} steps, n = {n} coordinates, {tf.__version__}")
    reference = [g.numpy() for g in variants["autodiff"]()]
    for name, run in variants.items():
        error = max(float(np.abs(a - b).max() / np.abs(b).max())
                    for a, b in zip([g.numpy() for g in run()], reference))
        print(f"  {name:<28s} max relative difference to autodiff {error:.1e}")

    best = dict.fromkeys(variants, float("inf"))
    for _ in range(args.rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            [g.numpy() for g in run()]
            best[name] = min(best[name], time.perf_counter() - start)
    print(f"{'variant':<28s} {'ms':>8s} {'speed vs autodiff':>18s}")
    for name, seconds in best.items():
        print(f"{name:<28s} {seconds * 1e3:8.1f} {best['autodiff'] / seconds:18.2f}")


if __name__ == "__main__":
    main()
