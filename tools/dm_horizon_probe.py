"""How an L2O-DM model behaves at several horizons: the diagnostic behind docs/RESULTS.md's curriculum analysis.

For each model (a shipped name, a weights file, or a training's `checkpoints/` directory, whose latest meta-weights
are read), it runs 20 trajectories of 1,000 steps on the MNIST training split (what validation runs on) and prints
the mean and median loss at steps 100, 200, 500 and 1,000 and the worst at 500; then the mean |step| the model
takes on pure Gaussian gradient noise of std 1e-4 ... 1 (steps 50-200 of 2,000 coordinates): a model trained for
long horizons shrinks its steps on noise, one trained on short ones keeps them large.

    python tools/dm_horizon_probe.py --data_dir=/path/to/mnist dm_cl_il results/paper_mnist/train/dm_cl/seed1
"""
import argparse
import os

import numpy as np
import tensorflow as tf

from l2o_tf import meta, models, networks, problems, seeding

STEPS = (100, 200, 500, 1000)
NOISE_STDS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def load(spec):
    """A model by name or file; a training's checkpoint directory gives the meta-weights it last saved."""
    if os.path.basename(os.path.normpath(spec)) != "checkpoints":
        return models.load(spec)
    cell = networks.CoordinateWiseDeepLSTM(seed=0)
    reader = tf.train.load_checkpoint(spec)
    weights = cell.get_original_weights()
    for module, variables in weights.items():
        for name in variables:
            variables[name] = reader.get_tensor(f"weights/{module}..{name}/.ATTRIBUTES/VARIABLE_VALUE")
    cell.set_original_weights(weights)
    return cell


def horizon_losses(cell, problem, trajectories=20, seed=7):
    """[trajectories, len(STEPS)] losses at STEPS."""
    runner = meta.Runner(problem, cell, seeding.generator(seed, "horizon_probe"))
    rows = []
    for _ in range(trajectories):
        _, losses = runner.run(runner.new_trajectory(), max(STEPS))
        rows.append([losses[s - 1] for s in STEPS])
    return np.array(rows)


def noise_steps(cell, num_coordinates=2000, num_steps=200):
    """Mean |step| over steps 50..num_steps on N(0, std^2) gradients, per std of NOISE_STDS."""
    @tf.function
    def mean_abs_steps(gradients):
        state = cell.initial_state(num_coordinates)
        sizes = tf.TensorArray(tf.float32, size=num_steps)
        for t in tf.range(num_steps):
            delta, state = cell.step(gradients[t], state)
            sizes = sizes.write(t, tf.reduce_mean(tf.abs(delta)))
        return sizes.stack()

    rng = np.random.default_rng(0)
    return [float(mean_abs_steps(tf.constant(rng.normal(0, std, (num_steps, num_coordinates)), tf.float32))[50:]
                  .numpy().mean()) for std in NOISE_STDS]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data_dir", required=True, help="the full MNIST (IDX files or TFDS)")
    args = parser.parse_args()
    problem = problems.get("mnist", mode="train", data_dir=args.data_dir)
    print(f"{'model':58s} mean at {'/'.join(map(str, STEPS))} | median | worst at 500 | |step| on noise "
          f"{'/'.join(f'{s:g}' for s in NOISE_STDS)}")
    for spec in args.models:
        cell = load(spec)
        losses = horizon_losses(cell, problem)
        print(f"{spec[-58:]:58s} " + " ".join(f"{v:.3f}" for v in losses.mean(0)) + " | " +
              " ".join(f"{v:.3f}" for v in np.median(losses, 0)) + f" | {losses[:, 2].max():.2f} | " +
              " ".join(f"{v:.1e}" for v in noise_steps(cell)), flush=True)


if __name__ == "__main__":
    main()
