"""Tuning hand-designed optimizers' learning rates: the search, its files, and reading a tuned rate back.

`python -m l2o_tf.tune_baselines` is its entry point; `run_all.sh` (l2o_tf.reproduce) and the guards' `tuned:<json>`
rates use it directly. For every optimizer, every learning rate of a log grid is run from each seed (its own
optimizee and minibatches, the evaluation harness's run); the rate with the lowest final training loss (mean over
the seeds of the mean of the last `window` recorded losses; a run that became non-finite never wins) is chosen.
Nothing here imports TensorFlow until a search runs.
"""
import json
import math
import os

from l2o_tf import errors
from l2o_tf import names

DEFAULT_RATES = "0.0001,0.0003,0.001,0.003,0.01,0.03,0.1,0.3,1,3"


# -- names and numbers of the flags ------------------------------------------------------------------------------

def parse_optimizers(text):
    """'adam, SGD' -> ['Adam', 'SGD']: the canonical names, each once."""
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    spelled = {name.lower(): name for name in names.BASELINES}
    unknown = [name for name in chosen if name.lower() not in spelled]
    if not chosen or unknown:
        raise errors.UsageError(f"--optimizers: unknown {', '.join(unknown) or '(none given)'}; expected some of "
                                f"{', '.join(names.BASELINES)}")
    return list(dict.fromkeys(spelled[name.lower()] for name in chosen))


def parse_numbers(flag, text, kind):
    """The comma-separated numbers of `--flag` (`kind` int or float; floats are learning rates: positive), each
    once."""
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise errors.UsageError(f"--{flag}: expected comma-separated {kind.__name__}s, got {text!r}") from None
    if not values:
        raise errors.UsageError(f"--{flag}: give at least one value")
    if kind is float and not all(math.isfinite(v) and v > 0 for v in values):
        raise errors.UsageError(f"--{flag}: learning rates must be positive, got {text!r}")
    return list(dict.fromkeys(values))


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


def partial_path(output_path, problem_name):
    """Where a search on `problem_name` keeps the runs it has finished, until `save` writes its results."""
    return os.path.join(output_path, f"tuning_{problem_name}.partial.npz")


def _load_partial(path, settings):
    """{(name, rate): losses [seeds, steps]} that a stopped search with these `settings` finished; {} if none."""
    import numpy as np
    if path is None or not os.path.exists(path):
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            if json.loads(str(data["settings"])) != settings:
                print(f"{path} is of a search with other settings: starting afresh", flush=True)
                return {}
            return {(name, rate): data[f"run{i}"] for i, (name, rate) in enumerate(json.loads(str(data["runs"])))}
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"{path} is unreadable ({type(e).__name__}): starting afresh", flush=True)
        return {}


def _save_partial(path, settings, finished):
    import numpy as np
    from l2o_tf import fileio
    fileio.atomic_save_npz(path, settings=json.dumps(settings), runs=json.dumps(list(finished)),
                           **{f"run{i}": np.asarray(losses) for i, losses in enumerate(finished.values())})


def tune(problem, names, rates, seeds, num_steps, window, on_run=None, resume_path=None):
    """{name: (chosen rate or None, {rate: final loss}, {seed: losses at the chosen rate})} for every name. With
    `resume_path` (`partial_path`) every finished run is kept there, and a search stopped part way (Ctrl-C, a killed
    process) goes on from it: a search of the conv problem takes hours."""
    from l2o_tf import evaluate
    from l2o_tf import optimizers
    from l2o_tf import problems
    settings = {"problem": problem.name, "data_source": problems.data_source(problem), "seeds": list(seeds),
                "num_steps": num_steps}
    finished = _load_partial(resume_path, settings)
    done = sum((name, rate) in finished for name in names for rate in rates)
    if done:
        print(f"resuming the search from {resume_path}: {done} of {len(names) * len(rates)} runs done", flush=True)
    results = {}
    for name in names:
        finals, records = {}, {}
        for rate in rates:
            if (name, rate) not in finished:
                rule = optimizers.get(name, rate)  # every seed in one compiled run (evaluate.evaluate_runs)
                finished[name, rate] = evaluate.evaluate_runs([(problem, rule, seed) for seed in seeds], num_steps,
                                                              1).losses
                if resume_path is not None:
                    _save_partial(resume_path, settings, finished)
            runs = dict(zip(seeds, finished[name, rate]))
            scores = [final_loss(losses, window) for losses in runs.values()]
            finals[rate] = float(sum(scores) / len(scores))
            records[rate] = runs
            if on_run is not None:
                on_run(name, rate, finals[rate])
        finite = {rate: loss for rate, loss in finals.items() if math.isfinite(loss)}
        chosen = min(finite, key=finite.get) if finite else None
        results[name] = (chosen, finals, records[chosen] if chosen is not None else {})
    return results


def save(results, problem, rates, seeds, num_steps, window, output_path):
    """Write the tuned-rates JSON and the chosen rates' loss records (see the module docstring; their flags name the
    problem's data source); print the choices; returns the JSON's path."""
    import numpy as np
    from l2o_tf import fileio
    from l2o_tf import problems
    problem_name = problem.name
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
                 "num_steps": num_steps, "data_source": problems.data_source(problem)}))
    path = os.path.join(output_path, f"tuned_{problem_name}.json")
    fileio.atomic_write_bytes(path, json.dumps(report, indent=2).encode())
    if os.path.exists(partial_path(output_path, problem_name)):
        os.remove(partial_path(output_path, problem_name))  # the search is complete: nothing to resume
    return path
