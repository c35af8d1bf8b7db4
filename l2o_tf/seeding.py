"""Seeded random generators whose streams are independent across seeds and across the parts of a run.

`tf.random.Generator.from_seed(s)` puts `s` into Philox's counter with the key at 0, so seeds s and s + 1 give the
same stream shifted by one block (seed 3's first 1,000 normals hold 996 of seed 2's): runs over "several seeds"
would repeat one run. Here the seed and the component's name are hashed into Philox's key instead.
"""
import hashlib

import tensorflow as tf


def state(seed, *names):
    """The Philox state [counter_low, counter_high, key] for (seed, names): counter 0, key a 63-bit hash."""
    digest = hashlib.blake2b(repr((int(seed),) + tuple(names)).encode(), digest_size=8).digest()
    return [0, 0, int.from_bytes(digest, "little") >> 1]


def generator(seed, *names):
    """A generator of its own for `seed` and the component `names` (e.g. `generator(seed, "validation")`)."""
    return tf.random.Generator.from_state(state(seed, *names), alg="philox")


def reset(rng, seed, *names):
    """Put `rng` back at the start of the stream of (seed, names), in place (a compiled function keeps it)."""
    rng.reset(tf.constant(state(seed, *names), tf.int64))
