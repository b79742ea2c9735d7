#!/bin/bash
# issue 7: ViT (patch 8, 64 px) trained from scratch on native-resolution crops of wild/train
set -x
cd "$(dirname "$0")/../.."   # the repository root
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 FAKESCOPE_NO_PROGRESS=1 OMP_NUM_THREADS=1 FAKESCOPE_THREADS=1

D=../shared/data
for method in code natural-traces; do
  start=$(date +%s)
  if [ $method = code ]; then E="--set epochs=12"; else E="--set epochs=10 --set stage1_epochs=4"; fi
  /usr/bin/time -v .venv/bin/fakescope train --data $D/wild/train.tar --method $method --set encoder=vit-crop64 \
    --set pre_crop=128 --set eval_size=128 --set eval_resize=native_crop $E --set max_minutes=24 --set batch_size=64 \
    --set threads=1 --set workers=1 --no-cache --out runs/i7/vit-wild-$method
  echo "WALL vit-wild-$method $(( $(date +%s) - start )) s"
  for t in cifake/val.tar cocoglide/dev.tar; do
    n=$(basename $(dirname $t))
    .venv/bin/fakescope eval --model runs/i7/vit-wild-$method --data $D/$t --report runs/i7/eval-vit-wild-$method-$n
  done
done
