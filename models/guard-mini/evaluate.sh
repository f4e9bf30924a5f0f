#!/usr/bin/env bash
# Held-out evaluation of guard-mini (issue #5), from the committed artefacts: teacher vs guard-mini as it ships (the
# calibrated .pte), guard-mini's .pte vs its eager float weights, and the .pte without its calibration.json. Writes
# benchmarks/results/guard_mini_*.{json,md}. The .pte is scored with the calibration fitted on dev records
# (models/guard-mini/calibration.json); the eager directories have none. The comparisons run side by side on one
# thread each (2-core machine).
#   bash models/guard-mini/evaluate.sh [DATA_DIR] [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:-/work/guard_data/v1}
WORK=${2:-/tmp/guard-mini-eval}
CATS=S1,S2,S3,S4,S5,S6,S7,S8,S9,S10,S11,S12,S13,S14   # the data's labels use the 8B list (S14 interpreter abuse)
G=.venv/bin/guard
[ -f "$DATA/test.jsonl" ] || $G data build --root ../shared/data --out "$DATA"
$G mini build --out "$WORK"            # rebuilds when the artefacts changed (build.json)
[ -d "$WORK/teacher" ] || $G mini build --teacher --out "$WORK"
LIMIT=${LIMIT:-}   # e.g. LIMIT=400: the first N test records (ids are hash-ordered, so a random sample)
L=${LIMIT:+--limit $LIMIT}
export OMP_NUM_THREADS=1 GUARD_THREADS=1
$G eval --data "$DATA/test.jsonl" "$WORK/teacher" --compare "$WORK/model.pte" --categories $CATS $L \
  --out benchmarks/results/guard_mini_vs_teacher > /dev/null & p1=$!
( $G eval --data "$DATA/test.jsonl" "$WORK/model.pte" --compare "$WORK/hf" --categories $CATS $L \
    --out benchmarks/results/guard_mini_pte_vs_eager > /dev/null
  $G eval --data "$DATA/test.jsonl" "$WORK/model.pte" --uncalibrated --categories $CATS $L \
    --out benchmarks/results/guard_mini_pte_uncalibrated > /dev/null ) & p2=$!
wait $p1; wait $p2
cat benchmarks/results/guard_mini_vs_teacher.md benchmarks/results/guard_mini_pte_vs_eager.md \
  benchmarks/results/guard_mini_pte_uncalibrated.md
