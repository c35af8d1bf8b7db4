"""The training-horizon schedule: the paper's curriculum (SPEC_DM §5, Algorithm 1), with a fixed horizon as its
one-stage special case. Pure Python, so the state machine can be tested on scripted validation losses.

At stage i the optimizer trains on `schedule[i]` steps and is validated on `schedule[i + 1]` (the last stage on its
own length). After each validation `observe(cost)` says what to do:
  IMPROVED  new best: save the model (`<key>.l2l-<stage>` and `<key>.l2l-0`);
  ADVANCE   at least `min_num_eval` validations, some improved, and this one did not: restore the stage's best,
            move on, and call `start_stage(baseline)` with the restored model's validation at the new length;
  STOP      `min_num_eval` validations and none improved on the stage's baseline: training ends;
  FINISHED  the last stage ended as ADVANCE would: training ends (the original crashed here instead);
  CONTINUE  keep training.
"""
import dataclasses
import math

DEFAULT_SCHEDULE = (100, 200, 500, 1000, 1500, 2000, 2500, 3000)
IMPROVED, ADVANCE, STOP, FINISHED, CONTINUE = "improved", "advance", "stop", "finished", "continue"


def parse_schedule(text):
    """'100 200 500' -> (100, 200, 500); the steps must be positive and non-decreasing."""
    try:
        schedule = tuple(int(s) for s in text.replace(",", " ").split())
    except ValueError:
        raise ValueError(f"the schedule must be space-separated integers, got {text!r}") from None
    if not schedule or min(schedule) <= 0 or list(schedule) != sorted(schedule):
        raise ValueError(f"the schedule must be positive, non-decreasing step counts, got {text!r}")
    return schedule


@dataclasses.dataclass
class Curriculum:
    schedule: tuple
    min_num_eval: int = 3
    enabled: bool = True
    stage: int = 0
    best: float = math.inf
    num_eval: int = 0
    improved: bool = False

    @property
    def train_steps(self):
        return self.schedule[self.stage]

    @property
    def valid_steps(self):
        return self.schedule[min(self.stage + 1, len(self.schedule) - 1)] if self.enabled else self.train_steps

    def observe(self, cost):
        """Record one validation cost (lower is better) and return the decision."""
        self.num_eval += 1
        if cost < self.best:
            self.best, self.improved = cost, True
            return IMPROVED
        if not self.enabled or self.num_eval < self.min_num_eval:
            return CONTINUE
        if not self.improved:
            return STOP
        if self.stage + 1 >= len(self.schedule):
            return FINISHED
        self.stage, self.num_eval, self.improved = self.stage + 1, 0, False
        return ADVANCE

    def start_stage(self, baseline):
        """The restored best model's validation at the new stage's length: the bar the stage must beat."""
        self.best = baseline

    def state_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_state_dict(cls, state):
        return cls(**{**state, "schedule": tuple(state["schedule"])})
