"""Evaluations in parallel: two evaluations one after the other (TensorFlow's default threads, as run_all.sh ran
its evaluation phase) against the same two at once, each with one thread pinned to its own core.

    python bench/bench_parallel_eval.py [--data_dir=DIR]    # about 4 minutes on 2 cores; run it alone

Two workloads of the paper_mnist preset's evaluation phase: the shipped L2O-DM on `mnist` (`--steps` steps) and
Adam on `mnist_conv` (`--conv_steps` steps), one seed each (evaluation seeds 2 and 3), with the `evaluate_dm` entry
point, timed from start to exit (start-up and tracing included, as in the preset). The result is each workload's wall time for two evaluations, in sequence and at once, and their ratio.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = {"L2O-DM on mnist": lambda a: ["--path=dm", "--problem=mnist", f"--num_steps={a.steps}"],
             "Adam on mnist_conv": lambda a: ["--optimizer=Adam", "--learning_rate=0.001", "--problem=mnist_conv",
                                              f"--num_steps={a.conv_steps}"]}


def evaluation(arguments, seed, output, data_dir, threads=None, core=None):
    env = dict(os.environ, PYTHONPATH=REPO)
    if threads:
        env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS=str(threads))
    command = ([sys.executable, "-m", "l2o_tf.evaluate_dm", *arguments, f"--seed={seed}", f"--output_path={output}"]
               + ([f"--data_dir={data_dir}"] if data_dir else []))
    pin = (lambda: os.sched_setaffinity(0, [core])) if core is not None else None
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=pin)


def wait(children):
    logs = [child.communicate()[0] for child in children]
    if any(child.returncode for child in children):
        raise SystemExit("an evaluation failed:\n" + logs[0][-2000:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--conv_steps", type=int, default=300)
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    print(f"{os.cpu_count()} CPUs, {len(cores)} usable; {args.steps} steps on mnist, {args.conv_steps} on mnist_conv")
    with tempfile.TemporaryDirectory() as workdir:
        for name, arguments in WORKLOADS.items():
            start = time.time()
            for seed in (2, 3):
                wait([evaluation(arguments(args), seed, os.path.join(workdir, f"s{seed}"), args.data_dir)])
            sequential = time.time() - start
            start = time.time()
            wait([evaluation(arguments(args), seed, os.path.join(workdir, f"p{seed}"), args.data_dir, 1,
                             cores[k % len(cores)]) for k, seed in enumerate((2, 3))])
            together = time.time() - start
            print(f"{name}: two in sequence, default threads {sequential:.1f} s; two at once, one thread each, "
                  f"pinned {together:.1f} s; {sequential / together:.2f}x", flush=True)


if __name__ == "__main__":
    main()
