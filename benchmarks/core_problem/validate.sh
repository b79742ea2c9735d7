#!/usr/bin/env bash
# Issue 17's validation of a recipe: leave-one-source-out over the labelled sources and the
# false-positive rate on camera photos held out by device (fakescope validate), for each
# backbone x head given. Run from the repository root with ../shared beside it and the extra
# sets built (../shared/tools/stage_extra.py, then benchmarks/core_problem/stage_sources.py).
# Results: runs/validate/<backbone>-<method><tag>.json and .md (docs/results.md, section 9).
#   BACKBONES="clip-b16" METHODS="linear" SETS="--set l2=1.0" TAG=-l2-1 benchmarks/core_problem/validate.sh
#   WITH_COCOGLIDE_REALS=1 TAG=-with-cocoglide-reals ...   the default's recipe (needs stage_sources.py DIR SHARED)
set -euo pipefail
S=${SHARED:-../shared/data}; E=${EXTRA:-../data-extra}; C=${CACHE:-.cache/features}
mkdir -p runs/validate
for B in ${BACKBONES:-clip-b16 effnet-lite0}; do
  for M in ${METHODS:-linear}; do
    # shellcheck disable=SC2086
    fakescope validate --backbone "$B" --method "$M" ${SETS:-} --per-class 1000 --cache "$C" \
      --source "cifake=$S/cifake/train.tar" --source "wild=$S/wild/train.tar" \
      --source "sd512=$E/sd512-imagenet/train.tar" --source "people=$E/people-coco/train.tar" \
      ${WITH_COCOGLIDE_REALS:+--source "cocoglide-real=$E/cocoglide-real/train.tar"} \
      --photos "digicam=$E/photos-digicam/train.tar" --photos "mei=$E/photos-mei/train.tar" \
      --report "runs/validate/$B-$M${TAG:-}.json"
  done
done
