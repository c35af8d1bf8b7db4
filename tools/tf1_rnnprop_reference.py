"""RNNprop meta-training on the MNIST MLP in the original's TF1 graph semantics, as an independent check of our trainer.

Usage: python tools/tf1_rnnprop_reference.py MNIST_DIR OUT SEED [resource]   (EPOCHS=100 by default)

Written from SPEC_DM §1.4 and §4 with `tf.compat.v1`: ref variables (or resource ones with `resource`), a v1
`while_loop` whose body takes its optimizee gradient with `tf.gradients`, and one `session.run` doing the forward
unroll, the assigns of the carried state and the meta-Adam step, as the original. Validation every 10 epochs on 20
trajectories; writes the weights of every validation as OUT/rp.l2l-<1000 + epoch> and the best as OUT/rp.l2l-0, in
the original layout (`l2o_tf.load` reads them). docs/FIDELITY.md ("Commands and configs") has what it showed: it
trains the same RNNprop as `l2o_tf.train_rnnprop`, so TF1's execution order is not why the released model differs.
"""
import os, sys, time, pickle
import numpy as np
import tensorflow as tf
tf1 = tf.compat.v1
tf1.disable_v2_behavior()
tf1.disable_control_flow_v2()
MNIST_DIR, OUT, SEED = sys.argv[1], sys.argv[2], int(sys.argv[3])
RESOURCE = "resource" in sys.argv[4:]
if RESOURCE:
    tf1.enable_resource_variables()
else:
    tf1.disable_resource_variables()
NUM_EPOCHS = int(os.environ.get("EPOCHS", 100))
from l2o_tf import datasets, original_pickle
os.makedirs(OUT, exist_ok=True)
tf1.set_random_seed(SEED)
np.random.seed(SEED)
data = datasets.load("mnist", "train", MNIST_DIR)
images = tf.constant(np.asarray(data.images).reshape(-1, 784), tf.float32)
labels = tf.constant(np.asarray(data.labels).astype(np.int64))
N = int(images.shape[0])
B1, B2 = 0.95, 0.95
shapes = [(784, 20), (20,), (20, 10), (10,)]

def f(xs):
    idx = tf1.random_uniform([128], 0, N, tf.int64)
    im, lb = tf.gather(images, idx), tf.gather(labels, idx)
    h = tf.sigmoid(tf.matmul(im, xs[0]) + xs[1])
    logits = tf.matmul(h, xs[2]) + xs[3]
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=lb, logits=logits))

def tn(fan):
    return tf1.truncated_normal_initializer(stddev=1.0 / np.sqrt(fan))

with tf1.variable_scope("net"):
    W = {"input_projection": {"w": tf1.get_variable("pw", [2, 20], initializer=tn(2)),
                              "b": tf1.get_variable("pb", [20], initializer=tf1.zeros_initializer())},
         "lstm_1": {"w_gates": tf1.get_variable("l1w", [40, 80], initializer=tn(40)),
                    "b_gates": tf1.get_variable("l1b", [80], initializer=tn(40))},
         "lstm_2": {"w_gates": tf1.get_variable("l2w", [40, 80], initializer=tn(40)),
                    "b_gates": tf1.get_variable("l2b", [80], initializer=tn(40))},
         "linear": {"w": tf1.get_variable("lw", [20, 1], initializer=tn(20)),
                    "b": tf1.get_variable("lb", [1], initializer=tf1.zeros_initializer())}}

def lstm(x, h, c, mod):
    gates = tf.matmul(tf.concat([x, h], 1), mod["w_gates"]) + mod["b_gates"]
    i, j, fg, o = tf.split(gates, 4, axis=1)
    c = tf.sigmoid(fg + 1.0) * c + tf.sigmoid(i) * tf.tanh(j)
    return tf.tanh(c) * tf.sigmoid(o), c

def net(m, g, s):
    shape = g.shape
    inp = tf.reshape(tf.concat([tf.expand_dims(m, -1), tf.expand_dims(g, -1)], -1), [-1, 2])
    x = tf.nn.elu(tf.matmul(inp, W["input_projection"]["w"]) + W["input_projection"]["b"])
    (h1, c1), (h2, c2) = s
    h1, c1 = lstm(x, h1, c1, W["lstm_1"])
    h2, c2 = lstm(h1, h2, c2, W["lstm_2"])
    out = tf.tanh(tf.matmul(h2, W["linear"]["w"]) + W["linear"]["b"]) * 0.01
    return tf.reshape(out, shape), ((h1, c1), (h2, c2))

with tf1.variable_scope("optimizee"):
    xv = [tf1.get_variable(f"x{k}", s, initializer=tf1.random_normal_initializer(stddev=0.01), trainable=False)
          for k, s in enumerate(shapes)]
def n_of(s): return int(np.prod(s))
sv = [tuple((tf1.Variable(tf.zeros([n_of(s), 20]), trainable=False), tf1.Variable(tf.zeros([n_of(s), 20]), trainable=False))
            for _ in range(2)) for s in shapes]
mv = [tf1.Variable(tf.zeros(s), trainable=False) for s in shapes]
vv = [tf1.Variable(tf.zeros(s), trainable=False) for s in shapes]
step = tf1.placeholder(tf.int32, [], "step")
T = 20

def body(t, fx_array, x, state, mt, vt):
    fx = f(x)
    fx_array = fx_array.write(t, fx)
    grads = [tf.stop_gradient(g) for g in tf1.gradients(fx, x)]
    s_f = tf.cast(step + t, tf.float32)
    x_next, s_next, m_next, v_next = [], [], [], []
    for xi, si, m, v, g in zip(x, state, mt, vt, grads):
        m = B1 * m + (1 - B1) * g
        v = B2 * v + (1 - B2) * g * g
        mh = m / (1 - tf.pow(B1, s_f)); vh = v / (1 - tf.pow(B2, s_f))
        d, si = net(mh / (tf.sqrt(vh) + 1e-8), g / (tf.sqrt(vh) + 1e-8), si)
        x_next.append(xi + d); s_next.append(si); m_next.append(m); v_next.append(v)
    return t + 1, fx_array, x_next, s_next, m_next, v_next

fx_array = tf1.TensorArray(tf.float32, size=T + 1, clear_after_read=False)
_, fx_array, x_final, s_final, m_final, v_final = tf1.while_loop(
    lambda t, *_: t < T, body, (0, fx_array, xv, sv, mv, vv), parallel_iterations=1, swap_memory=True)
fx_final = f(x_final)
fx_array = fx_array.write(T, fx_final)
loss = tf.reduce_sum(fx_array.stack())
flat = lambda n: tf.nest.flatten(n)
update = [tf1.assign(a, b) for a, b in zip(flat(xv) + flat(sv) + mv + vv,
                                           flat(x_final) + flat(s_final) + flat(m_final) + flat(v_final))]
meta_step = tf1.train.AdamOptimizer(0.001).minimize(loss)
reset = [tf1.variables_initializer(flat(sv) + xv)] + [tf1.assign(a, tf.zeros(a.shape)) for a in mv + vv]

def run_epoch(sess, ops):
    sess.run(reset)
    for i in range(5):
        cost = sess.run([fx_final] + ops, feed_dict={step: i * T + 1})[0]
    return cost

with tf1.Session(config=tf1.ConfigProto(intra_op_parallelism_threads=int(os.environ.get("THREADS", 0)))) as sess:
    sess.run(tf1.global_variables_initializer())
    best, t0 = float("inf"), time.time()
    for e in range(NUM_EPOCHS):
        cost = run_epoch(sess, [update, meta_step])
        if (e + 1) % 10 == 0:
            ev = sum(run_epoch(sess, [update]) for _ in range(20))
            weights = {m: {n: sess.run(v) for n, v in d.items()} for m, d in W.items()}
            open(os.path.join(OUT, f"rp.l2l-{1000 + e + 1}"), "wb").write(original_pickle.dumps(weights))
            tag = ""
            if ev < best:
                best = ev; tag = "saved"
                open(os.path.join(OUT, "rp.l2l-0"), "wb").write(original_pickle.dumps(weights))
            print(f"epoch {e + 1} train {cost:.4f} val {ev / 20:.4f} {tag} {time.time() - t0:.0f}s", flush=True)
