#!/bin/bash
# issue 7: ViT-small/4 trained from scratch on the CIFAKE train subset (2000/class), 32 px
set -x
cd "$(dirname "$0")/../.."   # the repository root
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 FAKESCOPE_NO_PROGRESS=1 OMP_NUM_THREADS=1 FAKESCOPE_THREADS=1
D=../shared/data
for method in code natural-traces; do
  start=$(date +%s)
  if [ $method = code ]; then E="--set epochs=5"; else E="--set epochs=4 --set stage1_epochs=2"; fi
  /usr/bin/time -v .venv/bin/fakescope train --data $D/cifake/train.tar --per-class 2000 \
    --method $method --set encoder=vit-small32 $E --set max_minutes=22 --set batch_size=128 --set threads=1 --set workers=1 \
    --no-cache --out runs/i7/vit-cifake-$method
  echo "WALL vit-cifake-$method $(( $(date +%s) - start )) s"
done
for method in code natural-traces; do
  for t in cifake/val.tar cocoglide/dev.tar wild/train.tar; do
    n=$(basename $(dirname $t))
    .venv/bin/fakescope eval --model runs/i7/vit-cifake-$method --data $D/$t --report runs/i7/eval-vit-cifake-$method-$n
  done
done
