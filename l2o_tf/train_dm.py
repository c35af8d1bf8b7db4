"""Meta-train L2O-DM: the original `train_dm.py` flags and defaults (evaluation every 100 epochs).

    python -m l2o_tf.train_dm --save_path=runs/dm --problem=mnist --num_epochs=10000 --num_steps=100
    python -m l2o_tf.train_dm --save_path=runs/dm_cl_il --if_cl --if_mt
"""
from l2o_tf import cli

cli.define_training_flags(evaluation_period=100, mt_ratios="0.0 0.1 0.3 0.3 0.3 0.3 0.3 0.3")


def main():
    from l2o_tf import distribute, training  # TensorFlow loads here, after the flags and the data were checked
    config = cli.training_config("dm")
    distribute.strategy_named(config.strategy)  # before any TensorFlow op: a cluster's must exist first
    training.train(config, cli.make_problem(mode="train"))


if __name__ == "__main__":
    cli.run(main, mode="train", check=lambda: cli.training_config("dm"))
