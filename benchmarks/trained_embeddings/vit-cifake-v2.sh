#!/bin/bash
# issue 7: longer ViT-small/4 runs on the CIFAKE train subset (2000/class), 32 px, 25-minute budget each
set -x
cd "$(dirname "$0")/../.."   # the repository root
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 FAKESCOPE_NO_PROGRESS=1 OMP_NUM_THREADS=1 FAKESCOPE_THREADS=1
D=../shared/data
for method in code natural-traces; do
  start=$(date +%s)
  if [ $method = code ]; then E="--set epochs=16"; else E="--set epochs=12 --set stage1_epochs=4"; fi
  /usr/bin/time -v .venv/bin/fakescope train --data $D/cifake/train.tar --per-class 2000 \
    --method $method --set encoder=vit-small32 $E --set max_minutes=25 --set batch_size=64 --set threads=1 --set workers=1 \
    --no-cache --out runs/i7/vit2-cifake-$method
  echo "WALL vit2-cifake-$method $(( $(date +%s) - start )) s"
done
