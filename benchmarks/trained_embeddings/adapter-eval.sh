#!/bin/bash
# issue 7: evaluate the adapter models, other heads on their encoders, and leave-one-generator-out
set -x
cd "$(dirname "$0")/../.."   # the repository root
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 FAKESCOPE_NO_PROGRESS=1 OMP_NUM_THREADS=1 FAKESCOPE_THREADS=1
D=../shared/data
C="--cache .cache/features"
for m in code:logistic code:ocsvm natural-traces:knn natural-traces:ocsvm; do
  method=${m%%:*}; head=${m##*:}
  start=$(date +%s)
  .venv/bin/fakescope train --data $D/cifake/train.tar --data $D/wild/train.tar --per-class 2000 --method $method \
    --set encoder=trained:runs/i7/adapter-$method/encoder --set head=$head --set threads=1 \
    --calibrate-on $D/wild/train.tar $C --out runs/i7/adapter-$method-$head
  echo "WALL adapter-$method-$head $(( $(date +%s) - start )) s"
done
for model in adapter-code adapter-natural-traces adapter-code-logistic adapter-code-ocsvm adapter-natural-traces-knn adapter-natural-traces-ocsvm; do
  for t in cifake/val.tar cocoglide/dev.tar; do
    n=$(basename $(dirname $t))
    .venv/bin/fakescope eval --model runs/i7/$model --data $D/$t $C --report runs/i7/eval-$model-$n
  done
done
for method in code natural-traces; do
  start=$(date +%s)
  .venv/bin/fakescope leave-out --data $D/cifake/train.tar --data $D/wild/train.tar --per-class 2000 \
    --test-source $D/wild/train.tar --method $method --set encoder=adapter:effnet-lite0 --set epochs=30 --set batch_size=256 \
    --set threads=1 --set local_views=1 $C --report runs/i7/logo-adapter-$method.json
  echo "WALL logo-adapter-$method $(( $(date +%s) - start )) s"
done
