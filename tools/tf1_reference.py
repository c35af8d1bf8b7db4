"""L2O-DM and RNNprop meta-training on the MNIST MLP in the original's TF1 graph semantics: an independent check of
our trainer, written from SPEC_DM §1, §4 and §5 with `tf.compat.v1`.

    python tools/tf1_reference.py --net=rnnprop MNIST_DIR OUT SEED            # 100 epochs, validation every 10
    python tools/tf1_reference.py --net=dm --cl --max_stage=2 MNIST_DIR OUT SEED
    python tools/tf1_reference.py --net=dm --resource --check=IN.npz embedded OUT.npz 0   # the test's use

As the original: ref variables (or resource ones with --resource), a v1 `while_loop` whose body takes its optimizee
gradient with `tf.gradients`, one `session.run` doing the forward unroll, the assigns of the carried state and the
meta-Adam step; validation on 20 trajectories of the training split; with --cl the original's curriculum (restore
the stage's best at each advance, keep meta-Adam's moments), whose decisions are `l2o_tf.curriculum`'s, tested on
their own; the network and its features are written here again from the spec, so that they check ours. Writes
every validation's weights as OUT/<key>.l2l-<1000 + epoch> and the best as OUT/<key>.l2l-0 in the original layout
(`l2o_tf.load` reads them), and one line per validation to stdout. With --check it runs meta-iterations from
given weights, optimizee and minibatch indices instead (IN.npz: `w:<module>/<name>`, `x:<k>`, `indices` [unrolls,
21, 128]) and writes the losses and meta-gradients of each, and the weights after them, to OUT.npz:
tests/test_tf1_reference.py compares our trainer with it on identical inputs. docs/FIDELITY.md ("The
meta-gradient", "Commands and configs") and docs/RESULTS.md ("The paper budget") have what it showed.
"""
import argparse
import os
import time

import numpy as np
import tensorflow as tf

from l2o_tf import curriculum, datasets, original_pickle

tf1 = tf.compat.v1
UNROLL = 20
SHAPES = [(784, 20), (20,), (20, 10), (10,)]


def parse():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", choices=("dm", "rnnprop"), required=True)
    parser.add_argument("--cl", action="store_true", help="the original's curriculum")
    parser.add_argument("--max_stage", type=int, default=len(curriculum.DEFAULT_SCHEDULE) - 1,
                        help="end the run when the curriculum reaches this stage (default: the last, where the "
                             "original crashed)")
    parser.add_argument("--epochs", type=int, default=None, help="default: 100 (rnnprop), 10000 (dm)")
    parser.add_argument("--if_scale", action="store_true", help="random scaling exp(U(-3, 3)) per epoch")
    parser.add_argument("--resource", action="store_true", help="resource variables instead of ref ones")
    parser.add_argument("--check", help="an .npz of weights, optimizee and minibatch indices: see above")
    parser.add_argument("mnist_dir", help="the IDX files, or 'embedded' for the package's MNIST sample")
    parser.add_argument("out", help="the output directory (with --check: the .npz written)")
    parser.add_argument("seed", type=int)
    return parser.parse_args()


def truncated(fan):
    return tf1.truncated_normal_initializer(stddev=1.0 / np.sqrt(fan))


def lstm(x, h, c, module):
    """Sonnet 1's LSTM: gates i, j, f, o; forget bias 1 added at run time."""
    gates = tf.matmul(tf.concat([x, h], 1), module["w_gates"]) + module["b_gates"]
    i, j, f, o = tf.split(gates, 4, axis=1)
    c = tf.sigmoid(f + 1.0) * c + tf.sigmoid(i) * tf.tanh(j)
    return tf.tanh(c) * tf.sigmoid(o), c


def network_weights(net):
    def module(name, w_shape, b_init):
        return {"w" if name in ("linear", "input_projection") else "w_gates":
                tf1.get_variable(f"{name}_w", w_shape, initializer=truncated(w_shape[0])),
                "b" if name in ("linear", "input_projection") else "b_gates":
                tf1.get_variable(f"{name}_b", [w_shape[1]], initializer=b_init(w_shape[0]))}
    zeros = lambda fan: tf1.zeros_initializer()
    features = 20 if net == "rnnprop" else 2
    weights = {"lstm_1": module("lstm_1", [features + 20, 80], truncated),
               "lstm_2": module("lstm_2", [40, 80], truncated),
               "linear": module("linear", [20, 1], zeros)}
    if net == "rnnprop":
        weights["input_projection"] = module("input_projection", [2, 20], zeros)
    return weights


def main():
    args = parse()
    tf1.disable_v2_behavior()
    tf1.disable_control_flow_v2()
    (tf1.enable_resource_variables if args.resource else tf1.disable_resource_variables)()
    epochs = args.epochs or (100 if args.net == "rnnprop" else 10000)
    period = 10 if args.net == "rnnprop" else 100
    key = "rp" if args.net == "rnnprop" else "cw"
    if not args.check:
        os.makedirs(args.out, exist_ok=True)
    tf1.set_random_seed(args.seed)
    rng = np.random.RandomState(args.seed)

    data = (datasets.embedded_sample("train") if args.mnist_dir == "embedded"
            else datasets.load("mnist", "train", args.mnist_dir))
    images = tf.constant(np.asarray(data.images).reshape(-1, 784), tf.float32)
    labels = tf.constant(np.asarray(data.labels).astype(np.int64))
    num_images = int(images.shape[0])
    scales = [tf1.placeholder_with_default(tf.ones(s), s) for s in SHAPES]
    batch_table = tf1.placeholder(tf.int64, [UNROLL + 1, 128]) if args.check else None

    def loss(xs, t):
        """The sigmoid MLP on a fresh minibatch of 128 (with replacement; --check: row t of the given table), at
        scale ⊙ x."""
        index = batch_table[t] if args.check else tf1.random_uniform([128], 0, num_images, tf.int64)
        w0, b0, w1, b1 = [s * x for s, x in zip(scales, xs)]
        hidden = tf.sigmoid(tf.matmul(tf.gather(images, index), w0) + b0)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.gather(labels, index), logits=tf.matmul(hidden, w1) + b1))

    with tf1.variable_scope("net"):
        weights = network_weights(args.net)

    def update(features, state):
        """One coordinate-wise step: features [n, 2] -> delta [n], new state."""
        if args.net == "rnnprop":
            projection = weights["input_projection"]
            features = tf.nn.elu(tf.matmul(features, projection["w"]) + projection["b"])
        (h1, c1), (h2, c2) = state
        h1, c1 = lstm(features, h1, c1, weights["lstm_1"])
        h2, c2 = lstm(h1, h2, c2, weights["lstm_2"])
        out = tf.matmul(h2, weights["linear"]["w"]) + weights["linear"]["b"]
        out = tf.tanh(out) if args.net == "rnnprop" else out
        return 0.01 * out[:, 0], ((h1, c1), (h2, c2))

    with tf1.variable_scope("optimizee"):
        x_vars = [tf1.get_variable(f"x{k}", s, initializer=tf1.random_normal_initializer(stddev=0.01),
                                   trainable=False) for k, s in enumerate(SHAPES)]
    sizes = [int(np.prod(s)) for s in SHAPES]
    zeros = lambda shape: tf1.Variable(tf.zeros(shape), trainable=False)
    state_vars = [tuple((zeros([n, 20]), zeros([n, 20])) for _ in range(2)) for n in sizes]
    m_vars, v_vars = [zeros(s) for s in SHAPES], [zeros(s) for s in SHAPES]
    step = tf1.placeholder(tf.int32, [], "step")

    def body(t, losses, xs, states, ms, vs):
        fx = loss(xs, t)
        losses = losses.write(t, fx)
        grads = [tf.stop_gradient(g) for g in tf1.gradients(fx, xs)]
        step_t = tf.cast(step + t, tf.float32)
        new = ([], [], [], [])
        for x, state, m, v, g in zip(xs, states, ms, vs, grads):
            flat = tf.reshape(g, [-1, 1])
            if args.net == "rnnprop":   # SPEC_DM §1.4, β1 = β2 = 0.95
                m, v = 0.95 * m + 0.05 * g, 0.95 * v + 0.05 * g * g
                root = tf.sqrt(v / (1 - tf.pow(0.95, step_t))) + 1e-8
                m_hat = m / (1 - tf.pow(0.95, step_t))
                features = tf.concat([tf.reshape(m_hat / root, [-1, 1]), tf.reshape(g / root, [-1, 1])], 1)
            else:                       # LogAndSign, k = 5: SPEC_DM §1.3
                log = tf.maximum(tf.math.log(tf.abs(flat) + np.finfo(np.float32).eps) / 5.0, -1.0)
                features = tf.concat([log, tf.clip_by_value(flat * np.exp(5.0), -1.0, 1.0)], 1)
            delta, state = update(features, state)
            for out, value in zip(new, (x + tf.reshape(delta, x.shape), state, m, v)):
                out.append(value)
        return (t + 1, losses) + new

    losses = tf1.TensorArray(tf.float32, size=UNROLL + 1, clear_after_read=False)
    _, losses, x_final, s_final, m_final, v_final = tf1.while_loop(
        lambda t, *_: t < UNROLL, body, (0, losses, x_vars, state_vars, m_vars, v_vars),
        parallel_iterations=1, swap_memory=True)
    final_loss = loss(x_final, UNROLL)
    meta_loss = tf.reduce_sum(losses.write(UNROLL, final_loss).stack())
    flat = tf.nest.flatten
    carry = [tf1.assign(a, b) for a, b in zip(flat(x_vars) + flat(state_vars) + m_vars + v_vars,
                                              flat(x_final) + flat(s_final) + flat(m_final) + flat(v_final))]
    weight_vars = {module: dict(variables) for module, variables in weights.items()}
    names = [(m, n) for m, d in weight_vars.items() for n in d]
    meta_gradients = tf1.gradients(meta_loss, [weight_vars[m][n] for m, n in names])   # what minimize() takes
    meta_step = tf1.train.AdamOptimizer(0.001).apply_gradients(
        zip(meta_gradients, [weight_vars[m][n] for m, n in names]))
    reset = [tf1.variables_initializer(flat(state_vars) + x_vars)] + [tf1.assign(a, tf.zeros(a.shape))
                                                                       for a in m_vars + v_vars]
    scaled_init = [tf1.assign(x, x / r) for x, r in zip(x_vars, scales)]
    placeholders = {(m, n): tf1.placeholder(tf.float32, weight_vars[m][n].shape) for m, n in names}
    restore = [tf1.assign(weight_vars[m][n], placeholders[m, n]) for m, n in names]
    x_given = [tf1.placeholder(tf.float32, s) for s in SHAPES]
    set_x = [tf1.assign(x, given) for x, given in zip(x_vars, x_given)]

    def run_epoch(session, unrolls, ops, scale):
        session.run(reset)
        feed = {}
        if scale:
            feed = {s: np.exp(rng.uniform(-3, 3, s.shape)).astype(np.float32) for s in scales}
            session.run(scaled_init, feed)
        for i in range(unrolls):
            cost = session.run([final_loss] + ops, {**feed, step: i * UNROLL + 1})[0]
        return cost

    config = tf1.ConfigProto(intra_op_parallelism_threads=int(os.environ.get("THREADS", 0)))
    with tf1.Session(config=config) as session:
        session.run(tf1.global_variables_initializer())
        if args.check:
            given = np.load(args.check)
            session.run(restore, {placeholders[m, n]: given[f"w:{m}/{n}"] for m, n in placeholders})
            session.run(reset)
            session.run(set_x, {p: given[f"x:{k}"] for k, p in enumerate(x_given)})
            results = {key: [] for key in ["meta_loss", "final_loss"] + [f"g:{m}/{n}" for m, n in names]}
            for u, rows in enumerate(given["indices"]):
                feed = {batch_table: rows, step: u * UNROLL + 1}
                meta, final, values = session.run([meta_loss, final_loss, meta_gradients, carry, meta_step],
                                                  feed)[:3]
                results["meta_loss"].append(meta)
                results["final_loss"].append(final)
                for (m, n), value in zip(names, values):
                    results[f"g:{m}/{n}"].append(value)
            weights_after = session.run(weight_vars)
            np.savez(args.out, **results, **{f"w:{m}/{n}": weights_after[m][n] for m, n in names})
            return
        schedule = curriculum.DEFAULT_SCHEDULE if args.cl else (5 * UNROLL,)
        cl, stage_best, start = curriculum.Curriculum(schedule, enabled=args.cl), None, time.time()
        for epoch in range(epochs):
            cost = run_epoch(session, cl.train_steps // UNROLL, [carry, meta_step], args.if_scale)
            if (epoch + 1) % period:
                continue
            stage, valid_steps = cl.stage, cl.valid_steps
            value = sum(run_epoch(session, valid_steps // UNROLL, [carry], False) for _ in range(20))
            current = session.run(weight_vars)
            with open(os.path.join(args.out, f"{key}.l2l-{1000 + epoch + 1}"), "wb") as f:
                f.write(original_pickle.dumps(current))
            decision = cl.observe(value)
            if decision == curriculum.IMPROVED:
                stage_best = current
                with open(os.path.join(args.out, f"{key}.l2l-0"), "wb") as f:
                    f.write(original_pickle.dumps(current))
            print(f"epoch {epoch + 1} stage {stage} train {cost:.4f} val@{valid_steps} {value / 20:.4f} {decision} "
                  f"{time.time() - start:.0f}s", flush=True)
            if decision in (curriculum.STOP, curriculum.FINISHED):
                break
            if decision == curriculum.ADVANCE:
                session.run(restore, {placeholders[m, n]: stage_best[m][n] for m, n in names})
                if cl.stage >= args.max_stage:
                    print(f"reached stage {cl.stage}: ending", flush=True)
                    break
                cl.start_stage(sum(run_epoch(session, cl.valid_steps // UNROLL, [carry], False) for _ in range(20)))
                print(f"stage {cl.stage}: baseline val@{cl.valid_steps} {cl.best / 20:.4f}", flush=True)

if __name__ == "__main__":
    main()
