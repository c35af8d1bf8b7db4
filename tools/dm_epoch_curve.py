"""How a learned optimizer changes as it trains longer: the paper's Fig. 4 from evaluations of a training's saves.

Each record (an evaluation's `.npz`, as `evaluate_dm` writes it) names in its flags the weights it evaluated; the
training epoch of those weights is read from the model's metadata (`<weights>.json`, `epoch`). Prints a markdown
table (per epoch: ln of the mean loss around steps 100, 500, 2,000 and over the last 100, mean ± std over the
evaluation seeds) and, with `--output`, draws those windows against the epoch, with `--reference LABEL=PATTERN`
records (e.g. the released `dm`) as horizontal lines of the same colours.

    python tools/dm_epoch_curve.py --output=docs/paper_mnist_dm_epochs.png results/probes/evals/dm_s1_ep*_e*.npz \
        --reference="dm, released=results/probes/evals/orig_dm_e*.npz"
"""
import argparse
import glob
import json
import os
import sys

import numpy as np

from l2o_tf import plot


def training_epoch(record):
    """The epoch of the weights an evaluation record was made with, from the model's metadata."""
    with np.load(record, allow_pickle=False) as data:
        weights = json.loads(str(data["flags"])).get("weights_file") if "flags" in data.files else None
    try:
        with open(f"{weights}.json", encoding="utf-8") as f:
            return int(json.load(f)["metadata"]["epoch"])
    except (TypeError, OSError, ValueError, KeyError) as e:
        raise SystemExit(f"error: {record}: cannot tell the training epoch of its weights {weights!r} "
                         f"({type(e).__name__}: {e})") from None


def by_epoch(records):
    """{epoch: [ln_windows of each record]}, epochs in order."""
    epochs = {}
    for record in records:
        epochs.setdefault(training_epoch(record), []).append(plot.ln_windows(plot.read_losses(record)))
    return dict(sorted(epochs.items()))


def table(epochs):
    lines = ["| training epoch | " + " | ".join(h for _, h, _ in plot.LN_WINDOWS) + " | evaluation seeds |",
             "|" + "---|" * (len(plot.LN_WINDOWS) + 2)]
    for epoch, summaries in epochs.items():
        lines.append(f"| {epoch:,} | " + " | ".join(plot.mean_std_cells(summaries)) + f" | {len(summaries)} |")
    return lines


def draw(epochs, references, output, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    x = list(epochs)
    for k, (key, heading, _) in enumerate(plot.LN_WINDOWS):
        means = [np.mean([s[key] for s in summaries if s[key] is not None]) for summaries in epochs.values()]
        axis.plot(x, means, marker="x", color=f"C{k}", label=f"steps {heading}")
        for r, (label, summaries) in enumerate(references):
            value = np.mean([s[key] for s in summaries if s[key] is not None])
            axis.axhline(value, color=f"C{k}", linestyle=("--", ":", "-.")[r % 3], linewidth=0.9,
                         label=label if k == 0 else None)
    axis.set_xlabel("training epoch of the evaluated save")
    axis.set_ylabel("ln(mean training loss) in the window")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    if title:
        axis.set_title(title)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", nargs="+", help="evaluation records (.npz) of the saves of one training")
    parser.add_argument("--reference", action="append", default=[], help="LABEL=PATTERN: records drawn as lines")
    parser.add_argument("--output", help="PNG to draw (needs matplotlib)")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    epochs = by_epoch(args.records)
    references = []
    for argument in args.reference:
        label, _, pattern = argument.partition("=")
        paths = sorted(glob.glob(pattern))
        if not label or not paths:
            raise SystemExit(f"error: --reference {argument!r}: expected LABEL=PATTERN matching records")
        references.append((label, [plot.ln_windows(plot.read_losses(p)) for p in paths]))
    print("\n".join(table(epochs)))
    if args.output:
        draw(epochs, references, args.output, args.title)
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main(sys.argv[1:])
