"""L2O-Scale's meta-objective of one unroll (SPEC_SCALE §2.2), exactly as the original computes it.

`objectives` is the original's `all_obj`, T + 1 losses on the unroll's whole data subset:
    [f(theta_start), f(theta_0), f(theta_1), ..., f(theta_{T-1})]
with theta_0 = theta_start, so the first two entries are the same number, and f(theta_T) left to the next unroll.
`initial_objective` (f_0) is f at the start of the FIRST unroll of the meta-iteration, on that unroll's subset.
"""
import tensorflow as tf

EPSILON = 1e-6


def meta_objective(objectives, initial_objective, use_log_objective=True, use_numerator_epsilon=False):
    """The scalar the meta-optimizer minimises.

    log objective (default):        mean_j log(F_j / (f_0 + 1e-6) + 1e-6)      over all T + 1 entries
    with use_numerator_epsilon:     mean_j log((F_j + 1e-6) / (f_0 + 1e-6))
    without the log objective:      sum_t (1/T) f(theta_t) / (f_0 + 1e-6)     over the T in-loop entries F_1..F_T
    """
    objectives = tf.convert_to_tensor(objectives)
    denominator = initial_objective + EPSILON
    if not use_log_objective:
        return tf.reduce_mean(objectives[1:]) / denominator
    if use_numerator_epsilon:
        return tf.reduce_mean(tf.math.log((objectives + EPSILON) / denominator))
    return tf.reduce_mean(tf.math.log(objectives / denominator + EPSILON))
