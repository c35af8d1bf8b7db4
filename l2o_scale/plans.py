"""What one meta-iteration of L2O-Scale will do, drawn up front in numpy (SPEC_SCALE §3.2, §3.3, §4.2, §4.3, §8.3).

A meta-iteration optimises one fresh optimizee (N(0, 1) in every tensor, biases included) over several unrolls,
one meta-update per unroll. Before it runs, the original draws in numpy: how many unrolls and how many steps each
(the unroll plan), a random subset of the training set per unroll (10,000 examples: the meta-objective is the loss
on the whole subset, every step's gradient a minibatch of it) and the minibatch indices of every step. Everything
here is plain numpy on a seeded `np.random.Generator`, so the plans can be checked draw by draw and the
TensorFlow side only gathers examples by index.
"""
import dataclasses

import numpy as np

SUBSET_SIZE = 10000  # the original's mini_batch_size: examples per unroll's data subset
REGULARIZE_TIMES = ("posterior", "prior", "none")  # any other value switches the regulariser on everywhere


def sample_numiter(rng, scale, minimum, clip=True):
    """round(Exp(scale)) + minimum, clipped to [0, 3 * minimum] as the train copy does (upstream has no clip).

    `np.round` rounds halves to even, as the original's `np.round`."""
    value = np.round(rng.exponential(scale)) + minimum
    if clip:
        value = np.clip(value, 0, 3 * minimum)
    return int(value)


@dataclasses.dataclass(frozen=True)
class UnrollSettings:
    """The flags that choose the unroll plan (§3.2, §7.1), with the train copy's defaults."""

    fix_unroll: bool = False
    fix_unroll_length: int = 20
    fix_num_steps: int = 100
    num_unroll_scale: float = 40
    min_num_unrolls: int = 10
    num_partial_unroll_itr_scale: float = 20
    min_num_itr_partial_unroll: int = 10


def unroll_plan(rng, settings, curriculum_unrolls=None):
    """Steps per unroll of one meta-iteration, a list of ints.

    `curriculum_unrolls` (the curriculum stage's number of unrolls, `--if_cl`) takes precedence: that many unrolls
    of `fix_unroll_length`. Else `--fix_unroll`: fix_num_steps // fix_unroll_length unrolls of fix_unroll_length.
    Else the long-tailed default: sample_numiter(40, 10) unrolls, each of sample_numiter(20, 10) steps."""
    s = settings
    if curriculum_unrolls is not None:
        return [s.fix_unroll_length] * int(curriculum_unrolls)
    if s.fix_unroll:
        return [s.fix_unroll_length] * (s.fix_num_steps // s.fix_unroll_length)
    num_unrolls = sample_numiter(rng, s.num_unroll_scale, s.min_num_unrolls)
    return [sample_numiter(rng, s.num_partial_unroll_itr_scale, s.min_num_itr_partial_unroll)
            for _ in range(num_unrolls)]


def curriculum_unrolls(num_steps, unroll_length):
    """A curriculum stage's steps as a number of unrolls (the original's num_steps / fix_unroll_length)."""
    return max(1, int(num_steps) // int(unroll_length))


def batch_indices(rng, size, num_batches, batch_size):
    """[num_batches, batch_size] indices into range(size): consecutive batches of a shuffled order, reshuffled and
    restarted whenever the next batch would run past the end, so every batch is full (the original's
    `batch_indices`)."""
    if batch_size > size:
        raise ValueError(f"a batch of {batch_size} cannot be drawn from {size} examples")
    order, position = rng.permutation(size), 0
    batches = np.empty([num_batches, batch_size], np.int64)
    for i in range(num_batches):
        if position + batch_size > size:
            order, position = rng.permutation(size), 0
        batches[i] = order[position:position + batch_size]
        position += batch_size
    return batches


def data_subset(rng, dataset_size, subset_size=SUBSET_SIZE, freeze=False):
    """One unroll's examples: the first `subset_size` of a shuffled training set (indices 0.. with `freeze`)."""
    size = min(subset_size, dataset_size)
    return np.arange(size) if freeze else rng.permutation(dataset_size)[:size]


@dataclasses.dataclass
class IterationData:
    """The examples of one meta-iteration, as indices into the problem's training split.

    subsets[u]          the examples of unroll u ([subset_size]); the meta-objective is the loss on all of them
    batches[u]          [T_u, batch] the minibatch of each step of unroll u (the learned optimizer's gradients)
    teacher_batches[u]  [T_u * k, batch] the teacher's minibatches (imitation, --mt_k = k); every k-th is batches[u]
    """

    subsets: list
    batches: list
    teacher_batches: list


def iteration_data(rng, plan, dataset_size, batch_size, subset_size=SUBSET_SIZE, freeze=False, k=1):
    """Subsets and minibatches for an unroll plan (§3.3, §4.2).

    The original draws one subset per unroll, then the batch indices of the whole meta-iteration at once,
    `batch_indices(subset, total_steps * k, batch)`, and gives unroll u the chunk after the previous unrolls'
    steps; indices address the unroll's own subset (here translated to training-split indices)."""
    subsets = [data_subset(rng, dataset_size, subset_size, freeze) for _ in plan]
    size = len(subsets[0])
    all_batches = batch_indices(rng, size, sum(plan) * k, batch_size)
    batches, teacher_batches, start = [], [], 0
    for subset, steps in zip(subsets, plan):
        chunk = subset[all_batches[start:start + steps * k]]
        teacher_batches.append(chunk)
        batches.append(chunk[::k])
        start += steps * k
    return IterationData(subsets, batches, teacher_batches)


def validation_batches(rng, subset, plan, batch_size):
    """The minibatches of a validation run on one subset (§3.5): for unroll u the original regenerates the batch
    indices of the whole run and takes chunk u; drawing only up to that chunk gives the same chunk."""
    batches, start = [], 0
    for steps in plan:
        drawn = batch_indices(rng, len(subset), start + steps, batch_size)
        batches.append(subset[drawn[start:]])
        start += steps
    return batches


def optimizee_init(rng, shapes):
    """The meta-training optimizee: N(0, 1) float32 in every tensor, biases included (§8.3)."""
    return [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
