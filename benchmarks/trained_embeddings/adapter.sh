#!/bin/bash
# issue 7: adapter on frozen effnet-lite0, CIFAKE subset 2000/class + wild/train (the data of docs/results.md section 2)
set -x
cd "$(dirname "$0")/../.."   # the repository root
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 FAKESCOPE_NO_PROGRESS=1 OMP_NUM_THREADS=1 FAKESCOPE_THREADS=1
D=../shared/data
for method in code natural-traces; do
  start=$(date +%s)
  /usr/bin/time -v .venv/bin/fakescope train --data $D/cifake/train.tar --data $D/wild/train.tar --per-class 2000 \
    --method $method --set encoder=adapter:effnet-lite0 --set epochs=30 --set batch_size=256 --set threads=1 --set local_views=1 \
    --calibrate-on $D/wild/train.tar --cache .cache/features --out runs/i7/adapter-$method
  echo "WALL adapter-$method $(( $(date +%s) - start )) s"
done
