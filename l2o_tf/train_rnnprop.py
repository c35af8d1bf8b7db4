"""Meta-train RNNprop: the original `train_rnnprop.py` flags and defaults (evaluation every 10 epochs, beta1/beta2).

    python -m l2o_tf.train_rnnprop --save_path=runs/rnnprop --num_epochs=100 --num_steps=100
    python -m l2o_tf.train_rnnprop --save_path=runs/rnnprop_cl_il --if_cl --if_mt
"""
from l2o_tf import cli

cli.define_training_flags("rnnprop")


def main():
    cli.training_main("rnnprop")


if __name__ == "__main__":
    cli.run(main, mode="train", check=lambda: cli.training_config("rnnprop"))
