#!/usr/bin/env bash
# Reproduce the paper's comparison with our own training (l2o_tf/reproduce.py): train every experiment of the preset
# (configs/<experiment>.flags, the paper's values, then configs/<preset>/<experiment>.flags, the preset's overrides),
# tune the baselines, evaluate everything on every problem, collect results.json / results.md, draw the figures.
#   ./run_all.sh --preset=smoke                          every experiment on tiny budgets and the embedded data
#   ./run_all.sh --preset=short --data_dir=DIR           reduced budgets: a few hours on 2 CPU cores (docs/RESULTS.md)
#   ./run_all.sh --preset=paper --data_dir=DIR           the paper's budgets (days on a CPU)
#   ./run_all.sh --preset=paper_mnist --data_dir=DIR     the paper's budgets on the MNIST problems (about a day)
#   ./run_all.sh --preset=short --dry_run                the plan, with what is done already
# Any flag of `python -m l2o_tf.reproduce --help` may follow (e.g. --problems=mnist,mnist_relu). Runs resume: run
# the same command again after an interruption; finished parts are skipped.
set -euo pipefail
cd "$(dirname "$0")"
preset=""
for argument in "$@"; do
  case $argument in
    --preset=*) preset=${argument#--preset=} ;;
    --help|-h|--helpfull) exec python -m l2o_tf.reproduce "$@" ;;
  esac
done
if [[ ! -f configs/presets/$preset.flags ]]; then
  echo "error: give --preset=smoke, --preset=short, --preset=paper or --preset=paper_mnist" >&2
  exit 2
fi
exec python -m l2o_tf.reproduce --flagfile="configs/presets/$preset.flags" "$@"
