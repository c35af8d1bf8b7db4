"""Tune hand-designed optimizers' learning rates on a problem: the paper's Fig. 7 baselines, and the guards' rate.

    python -m l2o_tf.tune_baselines --problem=mnist --optimizers=Adam,RMSProp,SGD,NAG,Adagrad --output_path=tuned

For every optimizer, every learning rate of a log grid is run from `--seeds` (each seed: its own optimizee and
minibatches, the evaluation harness's run) for `--num_steps`; the rate with the lowest final training loss (mean over
the seeds of the mean of the last `--final_window` recorded losses; a run that became non-finite never wins) is
chosen. Writes `<output_path>/tuned_<problem>.json` (the chosen rates and every rate's final loss) and the chosen
rates' loss records `<output_path>/<Optimizer>/seed<k>/<Optimizer>_eval_loss_record.pickle-<problem>` (+ .npz),
which `python -m l2o_tf.plot` reads. A guard takes the tuned rate with `--guard_learning_rate=tuned:<json>`.
"""
import json
import math
import os
import sys

from absl import flags

from l2o_tf import cli
from l2o_tf import errors

FLAGS = flags.FLAGS
DEFAULT_RATES = "0.0001,0.0003,0.001,0.003,0.01,0.03,0.1,0.3,1,3"


def define_flags():
    """The flags, listed by `--help` with the project's others (hence `module_name`)."""
    listed = {"module_name": cli.__name__}
    flags.DEFINE_string("problem", "mnist", "Optimizee problem.", **listed)
    flags.DEFINE_string("optimizers", ",".join(cli.BASELINES), f"Comma-separated: {', '.join(cli.BASELINES)}.",
                        **listed)
    flags.DEFINE_string("learning_rates", DEFAULT_RATES, "Comma-separated learning rates to try (a log grid).",
                        **listed)
    flags.DEFINE_string("seeds", "0,1,2", "Comma-separated seeds; the final losses are averaged over them.", **listed)
    flags.DEFINE_integer("num_steps", 10000, "Optimizee steps per run.", **listed)
    flags.DEFINE_integer("final_window", 100, "The final loss is the mean of this many last recorded losses.",
                         **listed)
    flags.DEFINE_string("output_path", "tuned", "Directory for the JSON of chosen rates and their loss records.",
                        **listed)
    cli.define_data_flags()


# -- flag parsing (no TensorFlow) ----------------------------------------------------------------------------------

def parse_optimizers(text):
    names = {name.lower(): name for name in cli.BASELINES}
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in chosen if name.lower() not in names]
    if not chosen or unknown:
        raise cli.UsageError(f"--optimizers: unknown {', '.join(unknown) or '(none given)'}; expected some of "
                             f"{', '.join(cli.BASELINES)}")
    return list(dict.fromkeys(names[name.lower()] for name in chosen))


def parse_numbers(flag, text, kind):
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise cli.UsageError(f"--{flag}: expected comma-separated {kind.__name__}s, got {text!r}") from None
    if not values:
        raise cli.UsageError(f"--{flag}: give at least one value")
    if kind is float and not all(math.isfinite(v) and v > 0 for v in values):
        raise cli.UsageError(f"--{flag}: learning rates must be positive, got {text!r}")
    return list(dict.fromkeys(values))


def check_flags():
    parse_optimizers(FLAGS.optimizers)
    parse_numbers("learning_rates", FLAGS.learning_rates, float)
    parse_numbers("seeds", FLAGS.seeds, int)
    cli.positive("num_steps", FLAGS.num_steps)
    cli.positive("final_window", FLAGS.final_window)


class TunedRateError(errors.UsageError):
    """A tuned-rates file that is missing, malformed, or lacks the optimizer asked for."""


def tuned_learning_rate(path, optimizer, problem=None):
    """The rate `tune_baselines` chose for `optimizer` (any case) in the JSON at `path` (TF-free, for the flags);
    with `problem`, the file must be for that problem."""
    try:
        with open(path, encoding="utf-8") as f:
            tuned = json.load(f)
        chosen = {name.lower(): rate for name, rate in tuned["chosen"].items()}
    except FileNotFoundError:
        raise TunedRateError(f"{path}: no such tuned-rates file (make one with python -m l2o_tf.tune_baselines)") \
            from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise TunedRateError(f"{path}: not a tune_baselines JSON ({type(e).__name__}: {e})") from None
    if problem is not None and tuned.get("problem") != problem:
        raise TunedRateError(f"{path} was tuned on {tuned.get('problem')!r}, not on {problem!r}")
    if optimizer.lower() not in chosen or chosen[optimizer.lower()] is None:
        raise TunedRateError(f"{path} has no tuned rate for {optimizer} (it has {', '.join(tuned['chosen'])})")
    return float(chosen[optimizer.lower()])


# -- the search -------------------------------------------------------------------------------------------------

def final_loss(losses, window):
    """Mean of the last `window` losses; inf when any loss of the run is not finite."""
    import numpy as np
    losses = np.asarray(losses, np.float64)
    return float(losses[-window:].mean()) if np.all(np.isfinite(losses)) else math.inf


def tune(problem, names, rates, seeds, num_steps, window, on_run=None):
    """{name: (chosen rate or None, {rate: final loss}, {seed: losses at the chosen rate})} for every name."""
    from l2o_tf import evaluate
    from l2o_tf import optimizers
    results = {}
    for name in names:
        finals, records = {}, {}
        for rate in rates:
            rule = optimizers.get(name, rate)  # every seed in one compiled run (evaluate.evaluate_runs)
            losses = evaluate.evaluate_runs([(problem, rule, seed) for seed in seeds], num_steps, 1).losses
            runs = dict(zip(seeds, losses))
            scores = [final_loss(losses, window) for losses in runs.values()]
            finals[rate] = float(sum(scores) / len(scores))
            records[rate] = runs
            if on_run is not None:
                on_run(name, rate, finals[rate])
        finite = {rate: loss for rate, loss in finals.items() if math.isfinite(loss)}
        chosen = min(finite, key=finite.get) if finite else None
        results[name] = (chosen, finals, records[chosen] if chosen is not None else {})
    return results


def save(results, problem_name, rates, seeds, num_steps, window, output_path):
    """Write the tuned-rates JSON and the chosen rates' loss records (see the module docstring); print the choices;
    returns the JSON's path."""
    import numpy as np
    from l2o_tf import fileio
    report = {"problem": problem_name, "num_steps": num_steps, "seeds": list(seeds), "final_window": window,
              "chosen": {}, "final_loss": {}}
    for name, (chosen, finals, runs) in results.items():
        report["chosen"][name] = chosen
        report["final_loss"][name] = {repr(rate): (loss if math.isfinite(loss) else None)
                                      for rate, loss in finals.items()}
        edge = chosen is not None and chosen in (min(rates), max(rates)) and len(rates) > 1
        print(f"{name}: learning rate {chosen}" + ("" if chosen is None else f", final loss {finals[chosen]:.4f}, "
              f"ln {np.log(finals[chosen]):.2f}") + ("  (at the edge of the grid: widen it)" if edge else ""))
        for seed, losses in runs.items():
            record = os.path.join(output_path, name, f"seed{seed}", f"{name}_eval_loss_record.pickle-{problem_name}")
            fileio.atomic_save_pickle(record, [float(v) for v in losses])
            fileio.atomic_save_npz(record + ".npz", losses=losses, flags=json.dumps(
                {"optimizer": name, "learning_rate": chosen, "problem": problem_name, "seed": seed,
                 "num_steps": num_steps}))
    path = os.path.join(output_path, f"tuned_{problem_name}.json")
    fileio.atomic_write_bytes(path, json.dumps(report, indent=2).encode())
    return path


def main():
    from absl import logging
    names = parse_optimizers(FLAGS.optimizers)
    rates = parse_numbers("learning_rates", FLAGS.learning_rates, float)
    seeds = parse_numbers("seeds", FLAGS.seeds, int)
    problem = cli.make_problem(mode="test")
    logging.info("tuning %s on %s: %d rates x %d seeds x %d steps each", ", ".join(names), problem.name,
                 len(rates), len(seeds), FLAGS.num_steps)
    results = tune(problem, names, rates, seeds, FLAGS.num_steps, FLAGS.final_window,
                   lambda name, rate, loss: logging.info("%s lr=%g: final loss %.4f", name, rate, loss))
    path = save(results, problem.name, rates, seeds, FLAGS.num_steps, FLAGS.final_window, FLAGS.output_path)
    print(f"Tuned rates: {path}")


if __name__ == "__main__":
    define_flags()
    cli.run(main, mode="test", check=check_flags)
    sys.exit(0)
