#!/bin/bash
# issue 7: the adapter CoDE run again on an IDLE machine with a COLD feature cache (its own cache dir),
# to time the first view-feature pass that took 30.8 min under load 4-10.
set -x
cd "$(dirname "$0")/../.."   # the repository root
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 FAKESCOPE_NO_PROGRESS=1
D=../shared/data
rm -rf .cache/features-retime
uptime
start=$(date +%s)
/usr/bin/time -v .venv/bin/fakescope train --data $D/cifake/train.tar --data $D/wild/train.tar --per-class 2000 --method code \
  --set encoder=adapter:effnet-lite0 --set epochs=30 --set batch_size=256 --set local_views=1 \
  --calibrate-on $D/wild/train.tar --cache .cache/features-retime --out runs/i7/adapter-code-retime
echo "WALL adapter-code-retime $(( $(date +%s) - start )) s"
uptime
