"""The update-rule protocol: every rule of l2o_tf passes the conformance checks; the list adapter and its errors."""
import numpy as np
import pytest
import tensorflow as tf

from conformance import check_rule
from l2o_tf import networks
from l2o_tf import optimizers
from l2o_tf import rules


def mlp_params(problem):
    return problem.init_params(tf.random.Generator.from_seed(1))


def saved_and_loaded(directory):
    return lambda cell: networks.load(networks.save(cell, str(directory)))


@pytest.mark.parametrize("net", ["dm", "rnnprop"])
def test_learned_cells_conform(net, tiny_mnist, tmp_path):
    cell = networks.for_problem(net, "mnist", seed=4)
    check_rule(cell, mlp_params(tiny_mnist), reload=saved_and_loaded(tmp_path), learned=True, problem=tiny_mnist)


@pytest.mark.parametrize("name", sorted(optimizers.RULES))
def test_baselines_conform(name, tiny_mnist):
    check_rule(optimizers.get(name, 0.01), mlp_params(tiny_mnist), problem=tiny_mnist)


def test_the_list_form_equals_the_flat_form():
    """A coordinate-wise rule on [a, b] is the rule on concat(a, b), split back."""
    cell = networks.for_problem("rnnprop", "mnist", seed=2)
    shapes = [(3, 4), (4,), (2, 2, 2)]
    gradients = [tf.random.stateless_normal(s, seed=[i, 0]) for i, s in enumerate(shapes)]
    deltas, state = cell.step(gradients, cell.initial_state([tf.zeros(s) for s in shapes]))
    flat_delta, flat_state = cell.step(rules.flatten(gradients), cell.initial_state(24))
    np.testing.assert_array_equal(rules.flatten(deltas).numpy(), flat_delta.numpy())
    assert [tuple(d.shape) for d in deltas] == shapes
    for a, b in zip(state, flat_state):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("rule", [networks.for_problem("dm", "mnist"), networks.for_problem("rnnprop", "mnist"),
                                  optimizers.Adam(0.1)], ids=["dm", "rnnprop", "adam"])
def test_bad_gradients_are_clear_errors(rule):
    state = rule.initial_state(6)
    with pytest.raises(TypeError, match="needs float32 gradients, got float64"):
        rule.step(tf.zeros([6], tf.float64), state)
    with pytest.raises(ValueError, match="got 5 gradient coordinates for a state made for 6"):
        rule.step(tf.zeros([5]), state)
    with pytest.raises(ValueError, match="got 7 gradient coordinates"):
        rule.step([tf.zeros([3]), tf.zeros([4])], state)


def test_num_coordinates_and_shapes():
    assert rules.num_coordinates(7) == 7
    assert rules.num_coordinates(tf.zeros([3, 4])) == 12
    assert rules.num_coordinates([tf.zeros([3, 4]), tf.Variable(tf.zeros([5]))]) == 17
    assert rules.num_coordinates([(3, 4), (5,)]) == 17
    assert rules.shapes_of([tf.zeros([2, 1]), (3,)]) == [(2, 1), (3,)]
    parts = rules.unflatten(tf.range(10.0), [(2, 3), (4,)])
    assert [p.numpy().tolist() for p in parts] == [[[0, 1, 2], [3, 4, 5]], [6, 7, 8, 9]]
