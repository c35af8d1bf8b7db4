"""Trainings in parallel: one L2O-DM training alone (TensorFlow's default threads) against two at once, each with
one thread pinned to its own core (what `run_all.sh --jobs=2` does) and with default threads, unpinned.

    python bench/bench_parallel.py [--data_dir=DIR] [--epochs=60]    # about 5 minutes on 2 cores; run it alone

Each configuration runs `train_dm` with configs/dm.flags for `--epochs` epochs (no validation) and reads the rate
from the trainings' own progress lines (epochs 10 to the end, so start-up and tracing are not counted); the
result is the machine's total rate in epochs per second and its ratio to the single training's.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINE = re.compile(r"^I\d{4} (\d\d):(\d\d):(\d\d\.\d+) .* epoch (\d+)/\d+ ")


def command(save_path, epochs, data_dir):
    return ([sys.executable, "-m", "l2o_tf.train_dm", f"--flagfile={REPO}/configs/dm.flags", f"--num_epochs={epochs}",
             "--evaluation_period=100000", f"--save_path={save_path}", "--seed=1"]
            + ([f"--data_dir={data_dir}"] if data_dir else []))


def epochs_per_second(log, first=10):
    """The rate between the progress line of epoch `first` (or the first after it) and the last one."""
    points = []
    for line in log.splitlines():
        match = LINE.match(line)
        if match:
            h, m, s, epoch = match.groups()
            points.append((int(epoch), int(h) * 3600 + int(m) * 60 + float(s)))
    points = [p for p in points if p[0] >= first]
    (e0, t0), (e1, t1) = points[0], points[-1]
    return (e1 - e0) / (t1 - t0)


def run(processes, epochs, data_dir, workdir, threads=None, pin=False):
    """Start `processes` trainings at once; their total rate in epochs per second."""
    children = []
    for i in range(processes):
        env = dict(os.environ, PYTHONPATH=REPO)
        if threads:
            env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS=str(threads))
        cores = sorted(os.sched_getaffinity(0))
        preexec = (lambda c=cores[i % len(cores)]: os.sched_setaffinity(0, [c])) if pin else None
        path = tempfile.mkdtemp(dir=workdir)
        children.append(subprocess.Popen(command(path, epochs, data_dir), env=env, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True, preexec_fn=preexec))
    logs = [child.communicate()[0] for child in children]
    if any(child.returncode for child in children):
        raise SystemExit("a training failed:\n" + logs[0][-2000:])
    return sum(epochs_per_second(log) for log in logs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, {len(os.sched_getaffinity(0))} usable; train_dm, {args.epochs} epochs each")
    with tempfile.TemporaryDirectory() as workdir:
        start = time.time()
        alone = run(1, args.epochs, args.data_dir, workdir)
        print(f"one training, default threads:        {alone:.3f} epochs/s  (1.00x)", flush=True)
        for label, threads, pin in (("two, one thread each, pinned:", 1, True),
                                    ("two, default threads, unpinned:", None, False)):
            rate = run(2, args.epochs, args.data_dir, workdir, threads, pin)
            print(f"{label:<38} {rate:.3f} epochs/s  ({rate / alone:.2f}x)", flush=True)
        print(f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
