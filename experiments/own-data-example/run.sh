#!/usr/bin/env bash
# The README's "Example: your own captioned images and a VQA file", run as written on 24 generated images, with
# the model and stage 0 made small on the command line. From the repository root:
#   bash experiments/own-data-example/run.sh [WORKDIR] [MINUTES] 2>&1 | tee experiments/own-data-example/log.txt
set -euo pipefail
repo=$(pwd)
work=${1:-/tmp/own-data-example}
minutes=${2:-4}
rm -rf "$work" && mkdir -p "$work" && cd "$work"
python "$repo/experiments/own-data-example/make_data.py" .
# mine.yaml is the README's block, copied out of it
python - "$repo/README.md" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
block = next(b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if b.startswith("# mine.yaml"))
open("mine.yaml", "w").write(block)
PY
small="backbone.d_model=64 backbone.n_layers=4 train.batch_size=8 train.log_every=25 data.vq_steps=300 data.vocab_size=64"
set -x
mdm train   --config mine.yaml --out runs/mine --minutes "$minutes" --no-progress $small
mdm caption --checkpoint runs/mine my_images/ --out captions.jsonl
mdm answer  --checkpoint runs/mine --image my_images/photos/1.jpg --question "what colour is the shape?"
mdm sample  --checkpoint runs/mine --prompt "a red circle on a white background" -n 8 --out shapes.png --out-dir shapes/
set +x
head -n 6 captions.jsonl
ls shapes/ && head -n 2 shapes/samples.jsonl
