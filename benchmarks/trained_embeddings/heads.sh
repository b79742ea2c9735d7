#!/bin/bash
# issue 7: heads on trained encoders (no retraining) + evaluations. usage: heads.sh ENCODER_RUN... (names under runs/i7)
set -x
cd "$(dirname "$0")/../.."   # the repository root
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 FAKESCOPE_NO_PROGRESS=1 OMP_NUM_THREADS=1 FAKESCOPE_THREADS=1
D=../shared/data
for enc in "$@"; do
  C="--cache .cache/features"   # the wild ViTs ran with --no-cache (set below)
  case $enc in *code) method=code; heads="knn logistic ocsvm";; *) method=natural-traces; heads="distance knn ocsvm";; esac
  case $enc in
    vit-wild*|vit2-wild*) data="--data $D/wild/train.tar"; cal=""; pc=""; tests="cifake/val.tar cocoglide/dev.tar"; C="--no-cache";;
    vit*) data="--data $D/cifake/train.tar"; cal=""; pc="--per-class 2000"; tests="cifake/val.tar cocoglide/dev.tar wild/train.tar";;
    *) data="--data $D/cifake/train.tar --data $D/wild/train.tar"; cal="--calibrate-on $D/wild/train.tar"; pc="--per-class 2000"; tests="cifake/val.tar cocoglide/dev.tar";;
  esac
  for head in $heads; do
    [ -f runs/i7/eval-$enc-$head-cocoglide/metrics.json ] && continue
    start=$(date +%s)
    .venv/bin/fakescope train $data $pc --method $method $cal $C \
      --set encoder=trained:runs/i7/$enc/encoder --set head=$head --set threads=1 --out runs/i7/$enc-$head
    echo "WALL head $enc-$head $(( $(date +%s) - start )) s"
    for t in $tests; do
      n=$(basename $(dirname $t))
      .venv/bin/fakescope eval --model runs/i7/$enc-$head --data $D/$t $(echo $C | sed 's/--no-cache//') --report runs/i7/eval-$enc-$head-$n
    done
  done
done
