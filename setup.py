"""Installable package for l2o-tf: learned optimizers (L2O-DM, RNNprop, L2O-Scale) in TensorFlow 2 / Keras 3."""
import setuptools

setuptools.setup(
    name="l2o-tf",
    version="0.1.0",
    description="TF2/Keras reimplementation of 'Training Stronger Baselines for Learning to Optimize'",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["l2o_tf", "l2o_tf.*", "l2o_scale", "l2o_scale.*"]),
    package_data={"l2o_tf": ["data/*.npz", "pretrained/README.md", "pretrained/*/*.l2l-0",
                             "pretrained/*/checkpoint", "pretrained/*/model.ckpt-*"]},
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3",
        "tensorflow-datasets",
        "importlib_resources",  # tensorflow-datasets imports it without declaring it
        "absl-py",
        "numpy",
    ],
    # the plot tests draw figures; the suite runs on two workers (pyproject.toml)
    extras_require={"test": ["pytest", "pytest-xdist", "matplotlib"], "plot": ["matplotlib"]},
)
