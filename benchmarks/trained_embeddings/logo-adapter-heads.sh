#!/bin/bash
# issue 7: leave-one-generator-out with other heads on the trained adapters.
# usage: logo-adapter-heads.sh METHOD:HEAD...  (ran as: code:logistic natural-traces:knn, then code:ocsvm,
#        then natural-traces:ocsvm)
set -x
cd "$(dirname "$0")/../.."   # the repository root
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 FAKESCOPE_NO_PROGRESS=1 OMP_NUM_THREADS=1 FAKESCOPE_THREADS=1
D=../shared/data
for mh in "$@"; do
  method=${mh%%:*}; head=${mh##*:}
  start=$(date +%s)
  .venv/bin/fakescope leave-out --data $D/cifake/train.tar --data $D/wild/train.tar --per-class 2000 \
    --test-source $D/wild/train.tar --method $method --set encoder=adapter:effnet-lite0 --set epochs=30 --set batch_size=256 \
    --set threads=1 --set local_views=1 --set head=$head --cache .cache/features --report runs/i7/logo-adapter-$method-$head.json
  echo "WALL logo-adapter-$method-$head $(( $(date +%s) - start )) s"
done
