"""Our L2O-DM meta-training against the original's TF1 graph (tools/tf1_reference.py) on identical inputs.

Both start from the same network weights and optimizee and see the same minibatches; over one 200-step epoch of
the curriculum's stage 1 (10 unrolls of 20, each with its meta-Adam step, the optimizee and LSTM state carried) the
losses, the first meta-gradient and the final network weights must agree. This pins our trainer's semantics (the
surrogate meta-gradient, the carried state, the step order, meta-Adam) to the original graph's.

The reference runs with resource variables. With the ref variables of the original's TF 1.14 its meta-gradient is
not well defined: the carried state is assigned in the same `session.run` as the backward pass, which reads some of
it after the assign (docs/FIDELITY.md, "The meta-gradient").
"""
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from l2o_tf import datasets, meta, networks, problems

TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "tf1_reference.py")
UNROLLS, UNROLL = 10, 20


class TableRng:
    """Stands in for the trainer's generator: each minibatch draw returns the next row of a fixed index table."""

    def __init__(self, table):
        self.table = tf.constant(table.reshape(-1, table.shape[-1]))
        self.row = tf.Variable(0, dtype=tf.int64)

    def uniform(self, shape, minval=0, maxval=None, dtype=tf.float32):
        del minval, maxval
        assert dtype == tf.int64 and list(shape) == [self.table.shape[1]]
        index = self.row.assign_add(1) - 1
        return tf.gather(self.table, index)


def test_our_trainer_matches_the_original_graph_over_a_stage_1_epoch(tmp_path):
    data = datasets.embedded_sample("train")
    problem = problems.get("mnist", dataset=(data.images, data.labels))
    cell = networks.CoordinateWiseDeepLSTM(seed=3)
    weights = cell.get_original_weights()
    rng = np.random.default_rng(0)
    x0 = [rng.normal(0, 0.01, shape).astype(np.float32) for shape in problem.param_shapes]
    indices = rng.integers(0, len(data.labels), size=[UNROLLS, UNROLL + 1, 128]).astype(np.int64)
    given = {f"w:{m}/{n}": a for m, d in weights.items() for n, a in d.items()}
    given.update({f"x:{k}": x for k, x in enumerate(x0)}, indices=indices)
    np.savez(tmp_path / "in.npz", **given)

    command = [sys.executable, TOOL, "--net=dm", "--resource", f"--check={tmp_path / 'in.npz'}", "embedded",
               str(tmp_path / "out.npz"), "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    reference = np.load(tmp_path / "out.npz")

    trainer = meta.Trainer(problem, cell, TableRng(indices), unroll_length=UNROLL)
    params = [tf.constant(x) for x in x0]
    trajectory = meta.Trajectory(params, cell.initial_state(params), (),
                                 [tf.ones(shape) for shape in problem.param_shapes])
    _, first_gradients = trainer.meta_gradient(trajectory)
    trainer.rng.row.assign(0)   # the same minibatches again for the training unroll
    meta_losses, final_losses = [], []
    for _ in range(UNROLLS):
        trajectory, meta_loss, final_loss, applied = trainer.train_unroll(trajectory)
        assert applied
        meta_losses.append(meta_loss)
        final_losses.append(final_loss)

    np.testing.assert_allclose(meta_losses, reference["meta_loss"], rtol=1e-5)
    np.testing.assert_allclose(final_losses, reference["final_loss"], rtol=1e-5)
    names = [(module, name) for module, variables in weights.items() for name in variables]
    for (module, name), ours in zip(names, first_gradients):
        expected = reference[f"g:{module}/{name}"][0]
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5 * np.max(np.abs(expected)),
                                   err_msg=f"{module}/{name}")
    after = cell.get_original_weights()
    for module, name in names:
        assert np.max(np.abs(after[module][name] - weights[module][name])) > 1e-3, (module, name)  # 10 Adam steps
        np.testing.assert_allclose(after[module][name], reference[f"w:{module}/{name}"], rtol=0, atol=1e-6,
                                   err_msg=f"{module}/{name}")
