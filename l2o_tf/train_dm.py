"""Meta-train L2O-DM: the original `train_dm.py` flags and defaults (evaluation every 100 epochs).

    python -m l2o_tf.train_dm --save_path=runs/dm --problem=mnist --num_epochs=10000 --num_steps=100
    python -m l2o_tf.train_dm --save_path=runs/dm_cl_il --if_cl --if_mt
"""
from l2o_tf import cli

cli.define_training_flags("dm")


def main():
    cli.training_main("dm")


if __name__ == "__main__":
    cli.run(main, mode="train", check=lambda: cli.training_config("dm"))
