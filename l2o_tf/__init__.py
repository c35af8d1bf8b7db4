"""l2o-tf: learned optimizers (L2O-DM, RNNprop) in TensorFlow 2 / Keras 3, after Chen et al. (NeurIPS 2020)."""
from l2o_tf import networks
from l2o_tf import optimizers
from l2o_tf import problems

__all__ = ["networks", "optimizers", "problems"]
