#!/usr/bin/env bash
# First result in minutes, no training: set up .venv (pinned), restore the shipped default models from
# the DVC remote stored in this repository (shipped/), then `cardiac-sr predict` with mse-NN, the
# phantom-trained model that gains the most on real scans (README "Results").
#
#   scripts/predict.sh INPUT -o OUTPUT [more cardiac-sr predict options]
#   scripts/predict.sh ../shared/data/sunnybrook/SCD0000101 -o sr101.nii.gz
#
# INPUT and OUTPUT are relative to where you call it from. Pass --model to use another model.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh"
models=(models/perceptual-TS.keras models/perceptual-NN.keras models/mse-TS.keras models/mse-NN.keras)
for m in "${models[@]}"; do
  if [ ! -f "$root/$m" ]; then
    echo "predict.sh: restoring the four default models from shipped/ (dvc pull, no training)" >&2
    (cd "$root" && .venv/bin/dvc pull -q --remote shipped "${models[@]}")
    break
  fi
done
case " $* " in
  *" --model "*|*" --model="*) exec "$root/.venv/bin/cardiac-sr" predict "$@" ;;
  *) exec "$root/.venv/bin/cardiac-sr" predict --model "$root/models/mse-NN.keras" "$@" ;;
esac
