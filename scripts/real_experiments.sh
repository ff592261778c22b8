#!/usr/bin/env bash
# Train on one real study, test on another, every way round, from scratch and fine-tuned from the
# shipped phantom model: DVC experiments with profiles/real.args and -S overrides (issue 28), so every
# number has its params and dvc.lock (`dvc exp show`).  Formats with scripts/exp_results.py:
#
#   cp models/mse-NN.keras init/                     # the phantom model to fine-tune from
#   bash scripts/real_experiments.sh                 # 4 runs, about 8 min each on the 2-core reference machine
#   python scripts/exp_results.py table real-SCD0000101-SCD0000201 real-SCD0000101-SCD0000201-ft \
#       real-SCD0000201-SCD0000101 real-SCD0000201-SCD0000101-ft
#
# Run it in a checkout next to ../shared (a git worktree is fine; `dvc queue` runs in a temporary folder
# where ../shared does not resolve).  STUDIES: the patient ids under prepare.path (default: Sunnybrook's).
# prepare/degrade/external stages equal to an earlier run's come from DVC's run cache (train always runs);
# FORCE=1 re-runs them all and replaces experiments of the same names (dvc exp run -f).
set -euo pipefail
MODEL=${MODEL:-mse-NN}
STUDIES=${STUDIES:-SCD0000101 SCD0000201}
for a in $STUDIES; do
    for b in $STUDIES; do
        [ "$a" != "$b" ] || continue
        for start in scratch ft; do
            name=real-$a-$b
            # every key another recipe changes is set in every run: `dvc exp run` starts from the last
            # experiment's params.yaml (an ACDC run leaves kspace, another learning rate or schedule, an external set, ...)
            extra=(-S train.init=null -S degrade.method=blur_bicubic -S train.learning_rate=0.001 -S evaluate.external=null
                   -S train.schedule=constant -S models.$MODEL.epochs=15 -S train.keep_init=0.0 -S evaluate.self_ensemble=false)
            if [ $start = ft ]; then
                test -f "init/$MODEL.keras" || { echo "init/$MODEL.keras missing: cp models/$MODEL.keras init/" >&2; exit 1; }
                name=$name-ft
                extra+=(-S 'train.init="init/{model}.keras"')
            fi
            echo "== $name $(date -u +%H:%M)"
            # shellcheck disable=SC2046
            dvc exp run ${FORCE:+-f} -n "$name" $(cat profiles/real.args) -S "prepare.split.train=[$a]" \
                -S "prepare.split.val=[]" -S "prepare.split.test=[$b]" "${extra[@]}" "evaluate@$MODEL" baselines
        done
    done
done
