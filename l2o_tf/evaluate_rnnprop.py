"""Evaluate RNNprop or a hand-designed baseline: the original `evaluate_rnnprop.py` flags (with --beta1/--beta2).

    python -m l2o_tf.evaluate_rnnprop --path=trained_models/rnnprop/rp.l2l-0 --problem=mnist --seed=2
"""
from l2o_tf import cli

cli.define_evaluation_flags(rnnprop=True)


def main():
    from l2o_tf import evaluate  # TensorFlow loads here, after the flags and the data were checked
    evaluate.main("rnnprop")


if __name__ == "__main__":
    cli.run(main, mode="test", check=lambda: cli.check_evaluation_flags("rnnprop"))
