#!/usr/bin/env bash
# One arm of the comparison: train the shapesworld preset with OVERRIDES to 2000 steps, score it, go on to
# 6000 steps, score it again (mdm eval --suite shapesworld, 64 held-out scenes, 20 sampler steps).
#   bash experiments/absorbing-vs-gaussian/run.sh NAME THREADS [section.key=value ...]
# Writes runs/absorbing-vs-gaussian/NAME (the run) and experiments/absorbing-vs-gaussian/results/NAME-STEP/.
set -euo pipefail
name=$1 threads=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
run=runs/absorbing-vs-gaussian/$name
for steps in ${STEPS:-2000 6000}; do
  if [ -d "$run/checkpoint" ]; then resume=--resume; else resume=; fi
  mdm train --config shapesworld --out "$run" --threads "$threads" --no-progress $resume train.steps=$steps "$@"
  mdm eval --checkpoint "$run" --suite shapesworld -n 64 --steps 20 --threads "$threads" \
    --out "$here/results/$name-$steps"
done
