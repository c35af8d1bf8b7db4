#!/usr/bin/env bash
# Reproduce the paper's L2O-DM / RNNprop experiments: train every variant with the original commands (configs/),
# then evaluate each trained optimizer, and Adam, on every paper problem for 10,000 steps with seed 2, and plot.
# Long: hours to days on a CPU. Runs resume: run the script again after an interruption.
#   DATA_DIR=/path/to/data ./run_all.sh        (MNIST IDX files; CIFAR-10 batches for the CIFAR problems)
#   PROBLEMS="mnist mnist_relu" VARIANTS="dm dm_cl_il" ./run_all.sh
set -euo pipefail
cd "$(dirname "$0")"
RUNS=${RUNS:-runs}
VARIANTS=${VARIANTS:-"dm dm_aug dm_cl dm_il dm_cl_il rnnprop rnnprop_cl_il"}
PROBLEMS=${PROBLEMS:-"mnist mnist_relu mnist_deeper mnist_conv cifar_conv lenet nas"}
STEPS=${STEPS:-10000}
ADAM_LR=${ADAM_LR:-0.01}  # or the rate `python -m l2o_tf.tune_baselines --optimizers=Adam` chose
data=()
[ -n "${DATA_DIR:-}" ] && data=(--data_dir="$DATA_DIR")
python -m l2o_tf.plot --check  # plotting needs matplotlib: fail now, not hours from now

for variant in $VARIANTS; do
  net=dm; [[ $variant == rnnprop* ]] && net=rnnprop
  echo "== train $variant"
  python -m "l2o_tf.train_$net" --flagfile="configs/$variant.flags" --save_path="$RUNS/$variant" "${data[@]}"
done

for problem in $PROBLEMS; do
  for variant in $VARIANTS; do
    net=dm; key=cw; [[ $variant == rnnprop* ]] && net=rnnprop && key=rp
    echo "== evaluate $variant on $problem"
    python -m "l2o_tf.evaluate_$net" --optimizer=L2L --path="$RUNS/$variant/$key.l2l-0" --problem="$problem" \
      --num_steps="$STEPS" --seed=2 --output_path="$RUNS/eval/$variant" "${data[@]}"
  done
  python -m l2o_tf.evaluate_dm --optimizer=Adam --learning_rate="$ADAM_LR" --problem="$problem" --num_steps="$STEPS" \
    --seed=2 --output_path="$RUNS/eval/adam" "${data[@]}"
  python -m l2o_tf.plot --output="$RUNS/eval/$problem.png" --title="$problem" \
    $(for v in $VARIANTS adam; do ls "$RUNS"/eval/$v/*_eval_loss_record.pickle-"$problem" 2>/dev/null | sed "s|^|$v=|"; done)
done
