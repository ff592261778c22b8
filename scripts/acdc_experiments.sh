#!/usr/bin/env bash
# The ACDC experiments of docs/real_data_acdc.md as DVC experiments, one after the other (issue 29):
# mse-NN trained from scratch and fine-tuned from the shipped phantom model on N of the 80 training
# patients of profiles/acdc.args (nested subsets in a seeded order), the same 10 val and 10 held-out
# test patients for every N, Sunnybrook as the external set.  Each run is `dvc exp run` with the
# profile and -S overrides, so every number has its params and dvc.lock (`dvc exp show`).
#
#   bash scripts/acdc_experiments.sh ft80 n1 ft1 ...   # run these (default: all, in this order)
#   python scripts/exp_results.py table acdc-n80 acdc-ft80  # the table (and `curve acdc-`: the figure)
#
# prepare, degrade and external stages whose params and dependencies equal an earlier run's are restored
# from DVC's run cache (train always runs: its logs are not cached, so DVC keeps no run-cache entry for
# it); FORCE=1 re-runs every stage and replaces an experiment of the same name (dvc exp run -f).
# EXP_PREFIX (default acdc-) starts every experiment's name: another series beside the first, e.g.
# EXP_PREFIX=acdc30- for runs fine-tuned from another phantom model.
#
# Run it in a checkout next to ../shared (a git worktree is fine; `dvc queue` runs in a temporary
# folder where ../shared does not resolve).  Fine-tuning reads init/mse-NN.keras: copy the phantom
# model there first (cp models/mse-NN.keras init/).  About 13 min a run on the 2-core reference machine.
set -euo pipefail
MODEL=mse-NN
# prepare.split 0.8/0.1/0.1 with prepare.seed 42 on the 100 ACDC patients, written out
# (`python scripts/exp_results.py acdc-split` prints them again from the code).
VAL=patient003,patient005,patient025,patient026,patient052,patient053,patient062,patient082,patient098,patient100
TEST=patient019,patient022,patient028,patient034,patient043,patient051,patient057,patient060,patient072,patient093
ORDER=$(python scripts/exp_results.py acdc-order)

run() {  # run NAME N INIT(yes|no) METHOD LEARNING_RATE SCHEDULE EPOCHS ENSEMBLE(true|false) KEEP_INIT [extra -S ...]
    local name=$1 n=$2 init=$3 method=$4 lr=$5 schedule=$6 epochs=$7 ensemble=$8 keep=$9; shift 9
    local train
    train=$(echo "$ORDER" | tr ',' '\n' | head -n "$n" | paste -sd, -)
    # every key a run may change is set in every run: `dvc exp run` starts from the workspace's params.yaml,
    # which holds the previous experiment's values
    local args=(-S "prepare.split.train=[$train]" -S "prepare.split.val=[$VAL]" -S "prepare.split.test=[$TEST]"
                -S "degrade.method=$method" -S "train.learning_rate=$lr" -S train.init=null
                -S "train.schedule=$schedule" -S "models.$MODEL.epochs=$epochs" -S "evaluate.self_ensemble=$ensemble"
                -S "train.keep_init=$keep")
    if [ "$init" = yes ]; then
        test -f "init/$MODEL.keras" || { echo "init/$MODEL.keras missing: cp models/$MODEL.keras init/" >&2; exit 1; }
        args+=(-S 'train.init="init/{model}.keras"')
    fi
    echo "== $name: $n training patients, fine-tuned: $init, $method, learning rate $lr ($schedule), $epochs epochs," \
         "self-ensemble: $ensemble, share of the start kept: $keep $(date -u +%H:%M)"
    # shellcheck disable=SC2046
    dvc exp run ${FORCE:+-f} -n "${EXP_PREFIX:-acdc-}$name" $(cat profiles/acdc.args) "${args[@]}" "$@" "evaluate@$MODEL" baselines
}

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(ft80 n1 ft1 n3 ft3 n10 ft10 n30 ft30 n80 kspace-ft80)
# A run's name says its recipe: [kspace-](n|ft)<patients>[-lr4][-cos][-e<epochs>][-wise][-se], e.g. ft80, n1,
# ft1-lr4, kspace-ft80, ft80-cos-e45, ft1-wise (default: the seed's degradation, learning rate 1e-3 constant,
# 15 epochs; n: from scratch, ft: fine-tuned from init/; -lr4: a tenth of the rate; -cos: train.schedule
# cosine; -wise: half the start's weights kept, train.keep_init: 0.5 (WiSE-FT; fine-tuned runs only);
# -se: scored as the 8-fold self-ensemble, evaluate.self_ensemble: true).
for name in "${names[@]}"; do
    rest=$name method=blur_bicubic lr=0.001 schedule=constant epochs=15 ensemble=false keep=0.0
    case $rest in kspace-*) method=kspace; rest=${rest#kspace-} ;; esac
    case $rest in *-se) ensemble=true; rest=${rest%-se} ;; esac
    case $rest in *-wise) keep=0.5; rest=${rest%-wise} ;; esac
    case $rest in *-e[0-9]*) epochs=${rest##*-e}; rest=${rest%-e*} ;; esac
    case $rest in *-cos) schedule=cosine; rest=${rest%-cos} ;; esac
    case $rest in *-lr4) lr=0.0001; rest=${rest%-lr4} ;; esac
    case $rest in
        n[0-9]*) init=no; n=${rest#n} ;;
        ft[0-9]*) init=yes; n=${rest#ft} ;;
        *) n=x ;;
    esac
    [[ $n =~ ^[0-9]+$ && $epochs =~ ^[0-9]+$ && ($keep = 0.0 || $init = yes) ]] || {
        echo "unknown run $name: expected [kspace-](n|ft)N[-lr4][-cos][-eN][-wise][-se] (-wise: ft runs only)" >&2; exit 2; }
    run "$name" "$n" "$init" "$method" "$lr" "$schedule" "$epochs" "$ensemble" "$keep"
done
