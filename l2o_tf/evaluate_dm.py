"""Evaluate L2O-DM or a hand-designed baseline: the original `evaluate_dm.py` flags.

    python -m l2o_tf.evaluate_dm --optimizer=L2L --path=dm_cl_il --problem=mnist --seed=2
    python -m l2o_tf.evaluate_dm --optimizer=Adam --learning_rate=0.01 --problem=mnist --num_steps=2000
"""
from l2o_tf import cli

cli.define_evaluation_flags()


def main():
    cli.evaluation_main("dm")


if __name__ == "__main__":
    cli.run(main, mode="test", check=lambda: cli.check_evaluation_flags("dm"))
