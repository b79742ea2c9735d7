#!/bin/bash
# issue 7: heads on each trained encoder (no retraining), evaluations, leave-one-generator-out
set -x
cd "$(dirname "$0")/../.."   # the repository root
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 FAKESCOPE_NO_PROGRESS=1 OMP_NUM_THREADS=1 FAKESCOPE_THREADS=1
D=../shared/data
C="--cache .cache/features"
for enc in vit-cifake-code vit-cifake-natural-traces vit2-cifake-code adapter-code adapter-natural-traces; do
  case $enc in *code) method=code; heads="knn logistic ocsvm";; *) method=natural-traces; heads="distance knn ocsvm";; esac
  case $enc in vit*) data="--data $D/cifake/train.tar"; cal="";; *) data="--data $D/cifake/train.tar --data $D/wild/train.tar"; cal="--calibrate-on $D/wild/train.tar";; esac
  for head in $heads; do
    [ -f runs/i7/eval-$enc-$head-cocoglide/metrics.json ] && continue
    start=$(date +%s)
    .venv/bin/fakescope train $data --per-class 2000 --method $method $cal $C \
      --set encoder=trained:runs/i7/$enc/encoder --set head=$head --set threads=1 --out runs/i7/$enc-$head
    echo "WALL head $enc-$head $(( $(date +%s) - start )) s"
    tests="cifake/val.tar cocoglide/dev.tar"
    case $enc in vit*) tests="$tests wild/train.tar";; esac
    for t in $tests; do
      n=$(basename $(dirname $t))
      .venv/bin/fakescope eval --model runs/i7/$enc-$head --data $D/$t $C --report runs/i7/eval-$enc-$head-$n
    done
  done
done
for method in code natural-traces; do
  start=$(date +%s)
  .venv/bin/fakescope leave-out --data $D/cifake/train.tar --data $D/wild/train.tar --per-class 2000 \
    --test-source $D/wild/train.tar --method $method --set encoder=adapter:effnet-lite0 --set epochs=30 --set batch_size=256 \
    --set threads=1 --set local_views=1 $C --report runs/i7/logo-adapter-$method.json
  echo "WALL logo-adapter-$method $(( $(date +%s) - start )) s"
done
