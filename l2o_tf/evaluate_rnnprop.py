"""Evaluate RNNprop or a hand-designed baseline: the original `evaluate_rnnprop.py` flags (with --beta1/--beta2).

    python -m l2o_tf.evaluate_rnnprop --path=l2o_tf/pretrained/rnnprop/rp.l2l-0 --problem=mnist --seed=2
"""
from l2o_tf import cli

cli.define_evaluation_flags(rnnprop=True)


def main():
    cli.evaluation_main("rnnprop")


if __name__ == "__main__":
    cli.run(main, mode="test", check=lambda: cli.check_evaluation_flags("rnnprop"))
