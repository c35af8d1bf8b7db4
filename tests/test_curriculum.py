"""The curriculum state machine (SPEC_DM §5) on scripted validation costs, and the schedule flag's parser."""
import json
import math

import pytest

from l2o_tf import curriculum
from l2o_tf.curriculum import ADVANCE, CONTINUE, FINISHED, IMPROVED, STOP


def feed(cl, costs):
    return [cl.observe(c) for c in costs]


def where(cl):
    return cl.stage, cl.train_steps, cl.valid_steps


def test_default_schedule_is_the_originals():
    """Hard-coded in both original trainers: 100 200 500 1000 1500 2000 2500 3000."""
    assert curriculum.DEFAULT_SCHEDULE == (100, 200, 500, 1000, 1500, 2000, 2500, 3000)


def test_stage_zero_first_eval_always_improves():
    """best starts at +inf, so even a huge (or the first) cost is an improvement."""
    cl = curriculum.Curriculum(curriculum.DEFAULT_SCHEDULE)
    assert where(cl) == (0, 100, 200)
    assert cl.observe(1e30) == IMPROVED
    assert cl.best == 1e30 and cl.num_eval == 1 and cl.improved


def test_continues_while_improving_then_advances_at_first_plateau():
    """Patience 1 after a minimum of 3 evaluations: improving evaluations never end a stage."""
    cl = curriculum.Curriculum((10, 20, 40), min_num_eval=3)
    assert feed(cl, [5.0, 4.0, 3.0, 2.0, 1.0]) == [IMPROVED] * 5
    assert where(cl) == (0, 10, 20) and cl.num_eval == 5
    assert cl.observe(1.0) == ADVANCE  # equal is not better
    assert where(cl) == (1, 20, 40)
    assert (cl.num_eval, cl.improved) == (0, False)


def test_no_advance_before_min_num_eval():
    """A non-improving 2nd evaluation only continues; the 3rd (also not improving) advances."""
    cl = curriculum.Curriculum((10, 20, 40), min_num_eval=3)
    assert feed(cl, [5.0, 6.0]) == [IMPROVED, CONTINUE]
    assert cl.stage == 0 and cl.best == 5.0
    assert cl.observe(7.0) == ADVANCE
    assert where(cl) == (1, 20, 40)


def test_min_num_eval_is_honoured():
    """With min_num_eval=5 four plateaus in a row keep the stage."""
    cl = curriculum.Curriculum((10, 20), min_num_eval=5)
    assert feed(cl, [3.0, 4.0, 4.0, 4.0]) == [IMPROVED, CONTINUE, CONTINUE, CONTINUE]
    assert cl.observe(4.0) == ADVANCE
    assert where(cl) == (1, 20, 20)


def test_start_stage_sets_the_bar():
    """After an advance the restored model's validation is the best to beat; costs above it do not improve."""
    cl = curriculum.Curriculum((10, 20, 40), min_num_eval=3)
    feed(cl, [5.0, 4.0, 4.5])
    assert cl.stage == 1
    cl.start_stage(2.0)
    assert cl.best == 2.0
    assert cl.observe(2.5) == CONTINUE
    assert cl.observe(1.5) == IMPROVED and cl.best == 1.5
    assert cl.observe(1.6) == ADVANCE
    assert where(cl) == (2, 40, 40)


def test_stop_when_a_stage_never_beats_its_baseline():
    """min_num_eval evaluations without beating the baseline end training (the stage is kept)."""
    cl = curriculum.Curriculum((10, 20, 40), min_num_eval=3)
    feed(cl, [5.0, 4.0, 4.5])
    cl.start_stage(1.0)
    assert feed(cl, [1.5, 1.2]) == [CONTINUE, CONTINUE]
    assert cl.observe(1.1) == STOP
    assert where(cl) == (1, 20, 40)
    assert cl.best == 1.0


def test_stop_in_stage_zero_only_if_nothing_ever_improved():
    """Stage 0 cannot stop on finite costs (the first one improves on inf); NaN costs never improve."""
    cl = curriculum.Curriculum((10, 20), min_num_eval=3)
    assert feed(cl, [math.nan, math.nan, math.nan]) == [CONTINUE, CONTINUE, STOP]


def test_finished_on_the_last_stage():
    """The last stage validates on its own length and, when it plateaus, finishes instead of crashing."""
    cl = curriculum.Curriculum((10, 20), min_num_eval=3)
    feed(cl, [3.0, 2.0, 2.5])
    assert where(cl) == (1, 20, 20)
    cl.start_stage(1.9)
    assert feed(cl, [1.8, 1.7, 1.6, 1.65]) == [IMPROVED, IMPROVED, IMPROVED, FINISHED]
    assert where(cl) == (1, 20, 20)


def test_single_stage_schedule_finishes():
    """A one-stage curriculum validates on its own length and finishes at its first plateau."""
    cl = curriculum.Curriculum((50,), min_num_eval=3)
    assert where(cl) == (0, 50, 50)
    assert feed(cl, [3.0, 2.0, 2.0]) == [IMPROVED, IMPROVED, FINISHED]


def test_disabled_curriculum_never_stops():
    """Fixed horizon (--if_cl=False): validate on the training length, keep saving improvements, never end."""
    cl = curriculum.Curriculum((100,), min_num_eval=3, enabled=False)
    assert where(cl) == (0, 100, 100)
    decisions = feed(cl, [5.0, 6.0, 7.0, 8.0, 4.0] + [9.0] * 50)
    assert decisions[:5] == [IMPROVED, CONTINUE, CONTINUE, CONTINUE, IMPROVED]
    assert set(decisions[5:]) == {CONTINUE}
    assert cl.stage == 0 and cl.best == 4.0
    # also with a longer schedule given: the horizon stays at the first entry
    cl = curriculum.Curriculum(curriculum.DEFAULT_SCHEDULE, enabled=False)
    assert set(feed(cl, [1.0] * 20)[1:]) == {CONTINUE}
    assert where(cl) == (0, 100, 100)


def test_walk_the_default_schedule():
    """A scripted run through all 8 stages: the exact (stage, train, valid) after each transition."""
    cl = curriculum.Curriculum(curriculum.DEFAULT_SCHEDULE, min_num_eval=3)
    expected = [(0, 100, 200), (1, 200, 500), (2, 500, 1000), (3, 1000, 1500), (4, 1500, 2000),
                (5, 2000, 2500), (6, 2500, 3000), (7, 3000, 3000)]
    cost = 100.0
    for stage, where_expected in enumerate(expected):
        assert where(cl) == where_expected
        if stage > 0:
            cl.start_stage(cost)
        # stage s: (s % 3) evaluations that do not beat the baseline, then 3 improvements, then a plateau
        stalls = stage % 3 if stage > 0 else 0
        decisions = feed(cl, [cost + 1.0] * stalls)
        assert decisions == [CONTINUE] * stalls
        for _ in range(3):
            cost -= 1.0
            assert cl.observe(cost) == IMPROVED
        last = cl.observe(cost + 0.5)
        if stage < 7:
            assert last == ADVANCE
            assert where(cl) == expected[stage + 1]
            assert (cl.num_eval, cl.improved) == (0, False)
        else:
            assert last == FINISHED
            assert where(cl) == (7, 3000, 3000)
    assert cost == 100.0 - 3 * 8


def test_state_dict_round_trip_through_json():
    """Resuming from a JSON checkpoint restores the machine exactly (schedule back to a tuple, inf best kept)."""
    cl = curriculum.Curriculum((10, 20, 40), min_num_eval=4)
    fresh = curriculum.Curriculum.from_state_dict(json.loads(json.dumps(cl.state_dict())))
    assert fresh == cl and fresh.best == math.inf
    assert feed(cl, [5.0, 4.0, 4.0, 4.5]) == [IMPROVED, IMPROVED, CONTINUE, ADVANCE]
    cl.start_stage(3.0)
    cl.observe(2.0)
    state = json.loads(json.dumps(cl.state_dict()))
    assert state == {"schedule": [10, 20, 40], "min_num_eval": 4, "enabled": True, "stage": 1, "best": 2.0,
                     "num_eval": 1, "improved": True}
    restored = curriculum.Curriculum.from_state_dict(state)
    assert restored == cl
    assert isinstance(restored.schedule, tuple)
    # and it continues identically
    assert feed(restored, [2.5, 2.5, 2.5]) == feed(cl, [2.5, 2.5, 2.5]) == [CONTINUE, CONTINUE, ADVANCE]
    assert where(restored) == where(cl) == (2, 40, 40)


def test_parse_schedule_accepts():
    """Space-separated positive non-decreasing integers (commas tolerated)."""
    assert curriculum.parse_schedule("100 200 500") == (100, 200, 500)
    assert curriculum.parse_schedule("  7  ") == (7,)
    assert curriculum.parse_schedule("100,200, 200") == (100, 200, 200)
    default = " ".join(map(str, curriculum.DEFAULT_SCHEDULE))
    assert curriculum.parse_schedule(default) == curriculum.DEFAULT_SCHEDULE


@pytest.mark.parametrize("text", ["", "   ", "100 abc", "100 2.5", "200 100", "100 300 200", "0", "0 100",
                                  "-100 200"])
def test_parse_schedule_rejects(text):
    """Empty, non-integer, decreasing, zero or negative schedules are flag errors."""
    with pytest.raises(ValueError):
        curriculum.parse_schedule(text)
