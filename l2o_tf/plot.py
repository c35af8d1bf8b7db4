"""Plot loss records as the paper's figures: ln(training loss) against the iteration, a panel per optimizee.

    python -m l2o_tf.plot --output=docs/guards.png dm='runs/*/dm/seed*/*' sgd='runs/*/sgd/seed*/*'
    python -m l2o_tf.plot --table dm='runs/*/dm/seed*/*' sgd='runs/*/sgd/seed*/*'

Each argument is LABEL=PATTERN: the loss records (`<optimizer>_eval_loss_record.pickle-<problem>` or its `.npz`, as
the evaluation harness, tune_baselines and run_all.sh write them) that PATTERN matches (a glob; quote it). Records
are grouped by problem (one panel each, named by the file's `-<problem>` suffix) and label; the several records of
one label in one panel are seeds: the line is the mean over seeds of ln(loss) (each seed's loss smoothed over
`--smooth` steps first), the band one standard deviation. Writes the PNG (`--output`) and a PDF beside it.
Needs matplotlib (`pip install -e ".[plot]"`); without it the command stops at once with one line
(`--check` does only that check: run_all.sh calls it before hours of work).

`--table` prints instead the numbers the paper's comparisons read (no matplotlib): per problem and label, ln of the
mean loss over steps 51-150, 451-550, 1,951-2,050 and the last 100, mean ± std over the label's records. A renamed
`.npz` record (without `_eval_loss_record.pickle-<problem>` in its name) is read too, as of its flags' problem.
"""
import glob
import json
import os
import pickle
import sys

import numpy as np
from absl import app
from absl import flags

from l2o_tf import cli
from l2o_tf import datasets
from l2o_tf import errors
from l2o_tf import fileio

FLAGS = flags.FLAGS
RECORD_MARK = "_eval_loss_record.pickle-"
MAX_POINTS = 2000  # per line, at most
SAMPLE_MARK = " [embedded MNIST sample]"  # after the label of records made on it: not comparable with the paper
FINAL_WINDOW = 100  # the final number of a run: ln of the mean loss over its last 100 steps
# The windows of a run's summary: (key, column heading, steps); a record too short for one has no value there.
LN_WINDOWS = (("ln_100", "~100", slice(50, 150)), ("ln_500", "~500", slice(450, 550)),
              ("ln_2000", "~2,000", slice(1950, 2050)), ("ln_final", "last 100", slice(-FINAL_WINDOW, None)))


class PlotError(errors.UsageError):
    """Bad plot arguments or unreadable records."""


def define_flags():
    """The flags, listed by `--help` with the project's others (hence `module_name`)."""
    listed = {"module_name": cli.__name__}
    flags.DEFINE_string("output", None, "PNG file to write (a PDF is written beside it).", **listed)
    flags.DEFINE_string("title", "", "Figure title.", **listed)
    flags.DEFINE_integer("smooth", 50, "Moving-average window over steps, applied to each seed's loss before ln.",
                         **listed)
    flags.DEFINE_bool("table", False, "Print the ln-loss windows of each label and problem (mean ± std over its "
                      "records) as markdown instead of drawing; needs no matplotlib and no --output.", **listed)
    flags.DEFINE_bool("check", False, "Only check that matplotlib is installed (exit 2 with one line if not).",
                      **listed)


def require_matplotlib():
    try:
        import matplotlib  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        raise PlotError('plotting needs matplotlib, which is not installed: pip install -e ".[plot]" (or pip '
                        'install matplotlib)') from None


def parse_series(arguments):
    """[(label, [paths])] from LABEL=PATTERN arguments, in the order given; every pattern must match a record."""
    series = []
    for argument in arguments:
        label, sep, pattern = argument.partition("=")
        if not sep or not label or not pattern:
            raise PlotError(f"expected LABEL=PATTERN, got {argument!r}")
        paths = sorted(p for p in glob.glob(pattern) if RECORD_MARK in os.path.basename(p) or p.endswith(".npz"))
        paths = _prefer_npz(paths)
        if not paths:
            raise PlotError(f"{label}: no loss record (*{RECORD_MARK}<problem>[.npz] or *.npz) matches {pattern!r}")
        series.append((label, paths))
    if not series:
        raise PlotError("give at least one LABEL=PATTERN of loss records")
    return series


def _prefer_npz(paths):
    """A record and its .npz twin hold the same losses: keep one of each pair."""
    chosen = set(paths)
    return [p for p in paths if not (not p.endswith(".npz") and p + ".npz" in chosen)]


def problem_of(path):
    """The problem a record is of: its name's `-<problem>` suffix, or for a renamed .npz the `problem` of its flags."""
    name = os.path.basename(path)
    if RECORD_MARK in name:
        name = name.split(RECORD_MARK, 1)[1]
        return name[:-len(".npz")] if name.endswith(".npz") else name
    problem = _recorded_flags(path).get("problem")
    if not problem:
        raise PlotError(f"{path}: cannot tell its problem (neither *{RECORD_MARK}<problem> nor a problem in its flags)")
    return str(problem)


def _recorded_flags(npz):
    """The flags an evaluation stored in its .npz record ({} for a record without them)."""
    try:
        with np.load(npz, allow_pickle=False) as data:
            return json.loads(str(data["flags"])) if "flags" in data.files else {}
    except (OSError, ValueError) as e:
        raise PlotError(f"{npz}: not a readable loss record ({type(e).__name__}: {e})") from None


def read_losses(path):
    """The float64 losses of a record: the original pickle (a list of floats) or our .npz (`losses`)."""
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as data:
                losses = data["losses"]
        else:
            with open(path, "rb") as f:
                losses = fileio.RestrictedUnpickler(f, what="a loss record").load()
        losses = np.asarray(losses, np.float64).ravel()
    except (OSError, ValueError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as e:
        raise PlotError(f"{path}: not a readable loss record ({type(e).__name__}: {e})") from None
    if losses.size == 0:
        raise PlotError(f"{path}: an empty loss record")
    return losses


def from_embedded_sample(path):
    """Whether the record's run used the embedded MNIST sample, as the flags in its .npz (or its pickle's .npz twin)
    say; a record without them says nothing: False."""
    npz = path if path.endswith(".npz") else path + ".npz"
    if not os.path.exists(npz):
        return False
    return str(_recorded_flags(npz).get("data_source") or "").startswith(datasets.SAMPLE_SOURCE)


def smoothed_ln(losses, window):
    """ln of the moving average of `losses` over `window` steps (shorter at the start), one value per step."""
    window = max(1, min(int(window), len(losses)))
    cumulative = np.concatenate([[0.0], np.cumsum(losses)])
    steps = np.arange(1, len(losses) + 1)
    start = np.maximum(steps - window, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log((cumulative[steps] - cumulative[start]) / (steps - start))


def ln_windows(losses):
    """{key: ln of the mean loss over the window's steps that `losses` has (None if it has none)}, per `LN_WINDOWS`."""
    return {key: float(np.log(losses[steps].mean())) if losses[steps].size else None for key, _, steps in LN_WINDOWS}


def mean_std_cells(summaries):
    """'mean ± std' over `summaries` (`ln_windows` of several records) per window; '–' where none has a value."""
    cells = []
    for key, _, _ in LN_WINDOWS:
        values = [s[key] for s in summaries if s[key] is not None]
        cells.append(f"{np.mean(values):.2f} ± {np.std(values):.2f}" if values else "–")
    return cells


def table_header():
    return ["| optimizer | " + " | ".join(heading for _, heading, _ in LN_WINDOWS) + " | runs |",
            "|" + "---|" * (len(LN_WINDOWS) + 2)]


def table(series):
    """Markdown lines: a table per problem, a row per label (`mean_std_cells` over its records of that problem)."""
    by_problem = {}
    for label, paths in series:
        for path in paths:
            losses = read_losses(path)
            rows = by_problem.setdefault(problem_of(path), {})
            rows.setdefault(label, []).append((losses.size, ln_windows(losses)))
    lines = []
    for problem, rows in by_problem.items():
        lines += [f"## {problem}", ""] + table_header()
        for label, records in rows.items():
            steps = sorted({size for size, _ in records})
            shown = f"{label} ({'/'.join(map(str, steps))} steps)"
            lines.append(f"| {shown} | " + " | ".join(mean_std_cells([w for _, w in records])) + f" | {len(records)} |")
        lines.append("")
    return lines


def curves(series, window):
    """{problem: [(label, mean, std, number of seeds)]}: mean and std over seeds of the smoothed ln(loss), over the
    steps every seed has. A label whose records used the embedded MNIST sample says so (`SAMPLE_MARK`)."""
    panels = {}
    for label, paths in series:
        by_problem = {}
        for path in paths:
            by_problem.setdefault(problem_of(path), []).append(path)
        for problem, problem_paths in by_problem.items():
            runs = [smoothed_ln(read_losses(path), window) for path in problem_paths]
            length = min(len(r) for r in runs)
            stacked = np.stack([r[:length] for r in runs])
            shown = label + SAMPLE_MARK if any(map(from_embedded_sample, problem_paths)) else label
            panels.setdefault(problem, []).append((shown, stacked.mean(axis=0), stacked.std(axis=0), len(runs)))
    return panels


def plot(panels, output, title="", window=1, styles=None):
    """Draw the panels side by side (`figure`); write `output` (PNG) and the PDF beside it; returns both paths."""
    import matplotlib.pyplot as plt
    figure = draw(panels, title, window, styles)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    pdf = os.path.splitext(output)[0] + ".pdf"
    # "tight" grows the saved image to the legend, which is wider than one panel when the labels are many and long
    figure.savefig(output, dpi=110, bbox_inches="tight")
    figure.savefig(pdf, bbox_inches="tight")
    plt.close(figure)
    return output, pdf


def draw(panels, title="", window=1, styles=None):
    """The matplotlib figure of `panels` (`curves`), a panel per problem; `window` is the smoothing the curves had,
    named on the y axis; `styles`, {label: (colour, line style)}, fixes some labels' lines (the rest get the next
    colours in turn)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = list(dict.fromkeys(label for lines in panels.values() for label, *_ in lines))
    given = styles or {}
    free = [label for label in labels if label not in given]
    colours = {label: f"C{i % 10}" for i, label in enumerate(free)}
    styles = {label: ("-", "--", ":")[(i // 10) % 3] for i, label in enumerate(free)}  # more than 10 curves
    for label, (colour, style) in given.items():
        colours[label], styles[label] = colour, style
    rows = (len(labels) + 2) // 3  # of the legend, three labels a row below the panels
    height = 3.6 + 0.22 * rows
    figure, axes = plt.subplots(1, len(panels), figsize=(max(6.4, 4.6 * len(panels)), height), squeeze=False)
    handles = {}
    for axis, (problem, lines) in zip(axes[0], panels.items()):
        for label, mean, std, seeds in lines:
            every = max(1, len(mean) // MAX_POINTS)  # a light file: the curves are smoothed already
            steps = np.arange(1, len(mean) + 1)[::every]
            mean, std = mean[::every], std[::every]
            handles[label], = axis.plot(steps, mean, color=colours[label], linestyle=styles[label], linewidth=1.2,
                                        label=label if seeds == 1 else f"{label} ({seeds} runs)")
            if seeds > 1:
                axis.fill_between(steps, mean - std, mean + std, color=colours[label], alpha=0.2, linewidth=0)
        axis.set_title(problem)
        axis.set_xlabel("iteration")
        axis.grid(alpha=0.3)
    # evaluation records hold f(x_{i+1}) on the step's fresh minibatch (of the test split for evaluate_*)
    axes[0][0].set_ylabel("ln(minibatch loss)" + (f", moving average of {window} steps" if window > 1 else ""))
    figure.legend(list(handles.values()), [h.get_label() for h in handles.values()], loc="lower center",
                  ncol=min(len(handles), 3), fontsize=8, frameon=False)
    if title:
        figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.22 * rows / height + 0.02, 1, 1))
    return figure


def main(argv):
    try:
        if FLAGS.table:
            print("\n".join(table(parse_series(argv[1:]))))
            return
        require_matplotlib()
        if FLAGS.check:
            return
        if not FLAGS.output:
            raise PlotError("--output=FILE.png is required")
        if FLAGS.smooth < 1:
            raise PlotError(f"--smooth must be at least 1, got {FLAGS.smooth}")
        panels = curves(parse_series(argv[1:]), FLAGS.smooth)
        for path in plot(panels, FLAGS.output, FLAGS.title, FLAGS.smooth):
            print(f"wrote {path}")
    except errors.L2OError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    define_flags()
    cli.print_help_if_asked(sys.argv)
    app.run(main, flags_parser=cli.parse_flags)
