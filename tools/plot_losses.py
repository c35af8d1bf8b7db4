"""Plot loss records (the evaluation pickles) as the paper's figures do: ln(loss) against the step.

    python tools/plot_losses.py --output=mnist.png dm=out/dm/L2L_eval_loss_record.pickle-mnist adam=out/adam/...
Needs matplotlib (`pip install -e ".[plot]"`).
"""
import argparse
import pickle

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="+", help="LABEL=PATH of a loss-record pickle")
    parser.add_argument("--output", required=True, help="image file to write")
    parser.add_argument("--title", default="")
    parser.add_argument("--smooth", type=int, default=50, help="moving-average window in steps")
    args = parser.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(figsize=(6, 4))
    for record in args.records:
        label, _, path = record.partition("=")
        with open(path, "rb") as f:
            losses = np.asarray(pickle.load(f), np.float64)
        window = max(1, min(args.smooth, len(losses)))
        smoothed = np.convolve(losses, np.ones(window) / window, mode="valid")
        axes.plot(np.arange(window, len(losses) + 1), np.log(smoothed), label=label)
    axes.set_xlabel("optimizee step")
    axes.set_ylabel("ln(loss)")
    axes.set_title(args.title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
