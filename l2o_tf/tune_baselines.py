"""Tune hand-designed optimizers' learning rates on a problem: the paper's Fig. 7 baselines, and the guards' rate.

    python -m l2o_tf.tune_baselines --problem=mnist --optimizers=Adam,RMSProp,SGD,NAG,Adagrad --output_path=tuned

For every optimizer, every learning rate of a log grid is run from `--seeds` (each seed: its own optimizee and
minibatches, the evaluation harness's run) for `--num_steps`; the rate with the lowest final training loss (mean over
the seeds of the mean of the last `--final_window` recorded losses; a run that became non-finite never wins) is
chosen. Writes `<output_path>/tuned_<problem>.json` (the chosen rates and every rate's final loss) and the chosen
rates' loss records `<output_path>/<Optimizer>/seed<k>/<Optimizer>_eval_loss_record.pickle-<problem>` (+ .npz),
which `python -m l2o_tf.plot` reads. A guard takes the tuned rate with `--guard_learning_rate=tuned:<json>`.
Every finished run is kept in `<output_path>/tuning_<problem>.partial.npz` until then: the same command after an
interruption goes on where the search stopped.
"""
from absl import flags

from l2o_tf import cli
from l2o_tf import names
from l2o_tf import tuning

FLAGS = flags.FLAGS


def define_flags():
    """The flags, listed by `--help` with the project's others (hence `module_name`)."""
    listed = {"module_name": cli.__name__}
    flags.DEFINE_string("problem", "mnist", "Optimizee problem.", **listed)
    flags.DEFINE_string("optimizers", ",".join(names.BASELINES), f"Comma-separated: {', '.join(names.BASELINES)}.",
                        **listed)
    flags.DEFINE_string("learning_rates", tuning.DEFAULT_RATES, "Comma-separated learning rates to try (a log "
                        "grid).", **listed)
    flags.DEFINE_string("seeds", "0,1,2", "Comma-separated seeds; the final losses are averaged over them.", **listed)
    flags.DEFINE_integer("num_steps", 10000, "Optimizee steps per run.", **listed)
    flags.DEFINE_integer("final_window", 100, "The final loss is the mean of this many last recorded losses.",
                         **listed)
    flags.DEFINE_string("output_path", "tuned", "Directory for the JSON of chosen rates and their loss records.",
                        **listed)
    cli.define_data_flags()


def check_flags():
    """Every flag checked before TensorFlow loads."""
    tuning.parse_optimizers(FLAGS.optimizers)
    tuning.parse_numbers("learning_rates", FLAGS.learning_rates, float)
    tuning.parse_numbers("seeds", FLAGS.seeds, int)
    names.positive("num_steps", FLAGS.num_steps)
    names.positive("final_window", FLAGS.final_window)


def main():
    from absl import logging
    optimizers = tuning.parse_optimizers(FLAGS.optimizers)
    rates = tuning.parse_numbers("learning_rates", FLAGS.learning_rates, float)
    seeds = tuning.parse_numbers("seeds", FLAGS.seeds, int)
    problem = cli.make_problem(mode="test")
    logging.info("tuning %s on %s: %d rates x %d seeds x %d steps each", ", ".join(optimizers), problem.name,
                 len(rates), len(seeds), FLAGS.num_steps)
    results = tuning.tune(problem, optimizers, rates, seeds, FLAGS.num_steps, FLAGS.final_window,
                          lambda name, rate, loss: logging.info("%s lr=%g: final loss %.4f", name, rate, loss),
                          resume_path=tuning.partial_path(FLAGS.output_path, problem.name))
    path = tuning.save(results, problem, rates, seeds, FLAGS.num_steps, FLAGS.final_window, FLAGS.output_path)
    print(f"Tuned rates: {path}")


if __name__ == "__main__":
    define_flags()
    cli.run(main, mode="test", check=check_flags)
