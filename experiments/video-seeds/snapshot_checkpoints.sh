#!/bin/bash
# Keep every checkpoint of a training run: copy RUN/checkpoint (with its config, tokenizer and vq) to
# SNAP/NAME-STEP each time train.checkpoint_every rewrites it, for condition_probe.py along the run.
#   experiments/video-seeds/snapshot_checkpoints.sh RUN [SNAP] [FINAL_STEP]   (defaults: RUN/../snap, 3038)
RUN=$1; SNAP=${2:-$(dirname "$RUN")/snap}; FINAL=${3:-3038}; NAME=$(basename "$RUN"); last=-1
while true; do
  if [ -f $RUN/checkpoint/trainer.json ]; then
    s=$(python3 -c "import json;print(json.load(open('$RUN/checkpoint/trainer.json'))['step'])" 2>/dev/null)
    if [ -n "$s" ] && [ "$s" != "$last" ]; then
      sleep 5; d=$SNAP/$NAME-$s; mkdir -p $d
      cp -r $RUN/checkpoint $RUN/config.yaml $RUN/tokenizer $RUN/vq $d/ 2>/dev/null; last=$s
    fi
  fi
  [ "$s" = "$FINAL" ] && exit 0
  sleep 20
done
