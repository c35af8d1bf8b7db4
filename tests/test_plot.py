"""l2o_tf.plot: the seeds' mean and band against numpy, the files it writes, and its one-line errors."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from l2o_tf import fileio
from l2o_tf import plot


def write_record(directory, optimizer, problem, losses, npz=False):
    path = os.path.join(directory, f"{optimizer}_eval_loss_record.pickle-{problem}")
    fileio.atomic_save_pickle(path, [float(v) for v in losses])
    if npz:
        fileio.atomic_save_npz(path + ".npz", losses=np.asarray(losses, np.float32))
    return path


def test_smoothed_ln_is_the_log_of_the_moving_average():
    losses = np.array([4.0, 2.0, 6.0, 1.0, 3.0])
    np.testing.assert_allclose(plot.smoothed_ln(losses, 2), np.log([4.0, 3.0, 4.0, 3.5, 2.0]))
    np.testing.assert_allclose(plot.smoothed_ln(losses, 1), np.log(losses))


def test_seeds_are_averaged_per_label_and_problem(tmp_path):
    rng = np.random.default_rng(0)
    seeds = [rng.uniform(0.1, 2.0, 30) for _ in range(3)]
    for k, losses in enumerate(seeds):
        write_record(tmp_path / "dm" / f"seed{k}", "L2L", "mnist", losses, npz=(k == 0))
    write_record(tmp_path / "dm" / "seed0", "L2L", "mnist_relu", seeds[0][:20])
    write_record(tmp_path / "sgd", "SGD", "mnist", seeds[1][:25])
    series = plot.parse_series([f"dm={tmp_path}/dm/seed*/*", f"SGD={tmp_path}/sgd/*"])
    assert [label for label, _ in series] == ["dm", "SGD"]
    assert len(series[0][1]) == 4      # a record and its .npz twin count once
    panels = plot.curves(series, window=5)
    assert list(panels) == ["mnist", "mnist_relu"]
    label, mean, std, count = panels["mnist"][0]
    logs = np.stack([plot.smoothed_ln(s, 5) for s in seeds])
    assert (label, count) == ("dm", 3)
    np.testing.assert_allclose(mean, logs.mean(axis=0), rtol=1e-6)   # the npz holds float32: a tiny difference
    np.testing.assert_allclose(std, logs.std(axis=0), rtol=1e-4, atol=1e-6)
    assert panels["mnist"][1][0] == "SGD" and len(panels["mnist"][1][1]) == 25
    assert [line[3] for line in panels["mnist_relu"]] == [1]


def test_the_figure_draws_each_labels_mean_band_and_names_the_smoothing():
    steps = np.arange(1, 101)
    panels = {"mnist": [("dm (a)", -0.01 * steps, np.full(100, 0.5), 3), ("sgd", -0.02 * steps, np.zeros(100), 1)],
              "mnist_relu": [("dm (a)", 0.01 * steps, np.full(100, 0.1), 2)]}
    figure = plot.draw(panels, "t", window=7)
    left, right = figure.axes[:2]
    assert [axis.get_title() for axis in (left, right)] == ["mnist", "mnist_relu"]
    assert [line.get_label() for line in left.lines] == ["dm (a) (3 runs)", "sgd"]
    np.testing.assert_allclose(left.lines[0].get_xdata(), steps)
    np.testing.assert_allclose(left.lines[1].get_ydata(), -0.02 * steps)
    np.testing.assert_allclose(right.lines[0].get_ydata(), 0.01 * steps)
    band = left.collections[0].get_paths()[0].vertices[:, 1]   # one band: the label with 3 seeds, mean +- std
    assert len(left.collections) == 1 and np.isclose(band.max(), -0.01 + 0.5) and np.isclose(band.min(), -1 - 0.5)
    assert left.get_ylabel() == "ln(minibatch loss), moving average of 7 steps"
    assert plot.draw(panels).axes[0].get_ylabel() == "ln(minibatch loss)"
    many = {"mnist": [(f"o{i}", -0.01 * steps, np.zeros(100), 1) for i in range(12)]}   # a legend of 4 rows
    assert plot.draw(many).get_figheight() == pytest.approx(plot.draw(panels).get_figheight() + 3 * 0.22)


def test_records_made_on_the_embedded_sample_are_marked(tmp_path):
    for seed, source in enumerate(["embedded sample (3,000 training digits)", "/data/mnist"]):
        path = write_record(tmp_path / f"seed{seed}", "L2L", "mnist", np.linspace(1.0, 0.5, 10))
        fileio.atomic_save_npz(path + ".npz", losses=np.linspace(1.0, 0.5, 10),
                               flags=json.dumps({"data_source": source}))
    write_record(tmp_path / "old", "SGD", "mnist", np.linspace(1.0, 0.5, 10))   # a bare pickle: not marked
    panels = plot.curves(plot.parse_series([f"dm={tmp_path}/seed0/*", f"full={tmp_path}/seed1/*",
                                            f"sgd={tmp_path}/old/*"]), 1)
    assert [line[0] for line in panels["mnist"]] == ["dm" + plot.SAMPLE_MARK, "full", "sgd"]


def test_ln_windows_are_the_logs_of_the_windows_means():
    losses = np.random.default_rng(1).uniform(0.1, 2.0, 3000)
    windows = plot.ln_windows(losses)
    expected = [losses[50:150], losses[450:550], losses[1950:2050], losses[-100:]]
    np.testing.assert_allclose([windows[key] for key, _, _ in plot.LN_WINDOWS], [np.log(w.mean()) for w in expected])
    short = plot.ln_windows(losses[:500])   # ~500 holds steps 451-500; nothing near 2,000
    assert np.isclose(short["ln_500"], np.log(losses[450:500].mean())) and short["ln_2000"] is None


def test_the_table_gives_each_labels_mean_and_std_per_problem(tmp_path):
    rng = np.random.default_rng(2)
    seeds = [rng.uniform(0.1, 2.0, 2100) for _ in range(2)]
    for k, losses in enumerate(seeds):
        write_record(tmp_path / "dm" / f"seed{k}", "L2L", "mnist", losses)
    renamed = tmp_path / "evals" / "model_e2.npz"   # a hand-named record: its problem comes from its flags
    os.makedirs(renamed.parent)
    fileio.atomic_save_npz(str(renamed), losses=seeds[0][:600], flags=json.dumps({"problem": "mnist_relu"}))
    lines = plot.table(plot.parse_series([f"dm={tmp_path}/dm/*/*", f"mine={tmp_path}/evals/*"]))
    windows = [plot.ln_windows(s) for s in seeds]
    final = [w["ln_final"] for w in windows]
    assert lines[0] == "## mnist" and lines[2] == "| optimizer | ~100 | ~500 | ~2,000 | last 100 | runs |"
    row = lines[4].split(" | ")
    assert row[0] == "| dm (2100 steps)" and row[-1] == "2 |"
    assert row[4] == f"{np.mean(final):.2f} ± {np.std(final):.2f}"
    assert lines[6] == "## mnist_relu"
    mine = plot.ln_windows(seeds[0][:600])
    assert lines[10] == (f"| mine (600 steps) | {mine['ln_100']:.2f} ± 0.00 | {mine['ln_500']:.2f} ± 0.00 | – | "
                         f"{mine['ln_final']:.2f} ± 0.00 | 1 |")


def test_a_renamed_record_without_its_problem_is_a_clear_error(tmp_path):
    fileio.atomic_save_npz(str(tmp_path / "x.npz"), losses=np.ones(5))
    with pytest.raises(plot.PlotError, match="cannot tell its problem"):
        plot.table(plot.parse_series([f"a={tmp_path}/*"]))


def run_plot(*args, code=None):
    script = ["-m", "l2o_tf.plot"] if code is None else ["-c", code]
    result = subprocess.run([sys.executable, *script, *args], capture_output=True, text=True, timeout=120)
    return result.returncode, result.stdout + result.stderr


def test_writes_png_and_pdf(tmp_path):
    write_record(tmp_path / "a" / "seed0", "L2L", "mnist", np.linspace(2.0, 0.1, 200))
    write_record(tmp_path / "a" / "seed1", "L2L", "mnist", np.linspace(2.2, 0.2, 200))
    code, output = run_plot(f"--output={tmp_path}/figure.png", "--title=test", f"dm={tmp_path}/a/*/*")
    assert code == 0, output
    with open(tmp_path / "figure.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "figure.pdf", "rb") as f:
        assert f.read(5) == b"%PDF-"



def test_a_legend_wider_than_the_panel_is_kept_whole(tmp_path):
    """18 long labels under one panel (as run_all.sh draws mnist_conv): the saved image widens to hold the legend
    instead of cutting its outer columns off at the panel's 4.6 inches (506 pixels at 110 dpi)."""
    curve = (np.linspace(1.0, 0.1, 100), np.zeros(100), 2)
    panels = {"mnist_conv": [(f"a-long-optimizer-label-{i}", *curve) for i in range(18)]}
    plot.plot(panels, str(tmp_path / "wide.png"))
    with open(tmp_path / "wide.png", "rb") as f:
        width = int.from_bytes(f.read(24)[16:20], "big")  # the PNG header's width field
    assert width > 506

_WITHOUT_MATPLOTLIB = """
import runpy, sys
sys.modules["matplotlib"] = None   # as if it were not installed
sys.argv = ["plot"] + sys.argv[1:]
runpy.run_module("l2o_tf.plot", run_name="__main__")
"""


def test_missing_matplotlib_is_one_line_before_any_work(tmp_path):
    # the pattern matches nothing: the matplotlib check must come first
    code, output = run_plot(f"--output={tmp_path}/x.png", "a=/no/such/records/*", code=_WITHOUT_MATPLOTLIB)
    assert code == 2
    assert output.strip().splitlines() == [
        'error: plotting needs matplotlib, which is not installed: pip install -e ".[plot]" (or pip install '
        'matplotlib)']
    code, output = run_plot("--check", code=_WITHOUT_MATPLOTLIB)
    assert code == 2 and output.startswith("error: plotting needs matplotlib")
    assert run_plot("--check")[0] == 0
    write_record(tmp_path / "r", "L2L", "mnist", np.linspace(2.0, 0.1, 200))   # --table needs no matplotlib
    code, output = run_plot("--table", f"dm={tmp_path}/r/*", code=_WITHOUT_MATPLOTLIB)
    assert code == 0 and "| dm (200 steps) |" in output, output


@pytest.mark.parametrize("args, message", [
    (["a=/no/such/*"], "no loss record"),
    (["nolabel"], "LABEL=PATTERN"),
    ([], "at least one"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, args, message):
    code, output = run_plot(f"--output={tmp_path}/x.png", *args)
    assert code == 2
    assert len(output.strip().splitlines()) == 1 and message in output


def test_a_corrupt_record_is_a_clear_error(tmp_path):
    path = tmp_path / "L2L_eval_loss_record.pickle-mnist"
    path.write_bytes(pickle.dumps(os.system))   # a pickle naming a function: refused, not run
    with pytest.raises(plot.PlotError, match="not a readable loss record"):
        plot.read_losses(str(path))
