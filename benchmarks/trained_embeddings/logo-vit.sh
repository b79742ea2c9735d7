#!/bin/bash
# issue 7: leave-one-generator-out for the ViT on native-resolution wild/train crops (table C's
# first-run recipe: code 12 epochs, natural traces 4 + 10 epochs; fixed epochs, so load changes
# wall time only). Usage: logo-vit.sh code|natural-traces
set -x
cd "$(dirname "$0")/../.."   # the repository root
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 FAKESCOPE_NO_PROGRESS=1 OMP_NUM_THREADS=1 FAKESCOPE_THREADS=1
D=../shared/data
method=$1
if [ $method = code ]; then E="--set epochs=12 --set head=logistic"; else E="--set epochs=10 --set stage1_epochs=4"; fi
start=$(date +%s)
.venv/bin/fakescope leave-out --data $D/wild/train.tar --test-source $D/wild/train.tar \
  --method $method --set encoder=vit-crop64 --set pre_crop=128 --set eval_size=128 --set eval_resize=native_crop $E \
  --set batch_size=64 --set threads=1 --set workers=1 --report runs/i7/logo-vit-wild-$method.json
echo "WALL logo-vit-wild-$method $(( $(date +%s) - start )) s"
