"""Meta-train RNNprop: the original `train_rnnprop.py` flags and defaults (evaluation every 10 epochs, beta1/beta2).

    python -m l2o_tf.train_rnnprop --save_path=runs/rnnprop --num_epochs=100 --num_steps=100
    python -m l2o_tf.train_rnnprop --save_path=runs/rnnprop_cl_il --if_cl --if_mt
"""
from l2o_tf import cli

cli.define_training_flags(evaluation_period=10, mt_ratios="0.3 0.3 0.3", rnnprop=True)


def main():
    from l2o_tf import distribute, training  # TensorFlow loads here, after the flags and the data were checked
    config = cli.training_config("rnnprop")
    distribute.strategy_named(config.strategy)  # before any TensorFlow op: a cluster's must exist first
    training.train(config, cli.make_problem(mode="train"))


if __name__ == "__main__":
    cli.run(main, mode="train", check=lambda: cli.training_config("rnnprop"))
