#!/usr/bin/env bash
# Issue 15's comparison: a linear probe on each offline backbone, in-domain (held-out split of the
# training source), leave-one-generator-out on wild/train, and across sources (wild -> sd512 and back).
# Run from the repository root with ../shared beside it and data-extra/ built by stage_extra.py.
# Results: runs/cmp/*.json (docs/results.md, section 9).
set -euo pipefail
S=${SHARED:-../shared/data}; E=${EXTRA:-../data-extra}; C=${CACHE:-.cache/features}
mkdir -p runs/cmp
for B in ${BACKBONES:-clip-b16 effnet-lite0 rn50-nsfw vit-s14-focus}; do
  fakescope leave-out --data "$S/wild/train.tar" --backbone "$B" --cache "$C" --report "runs/cmp/$B-logo.json"
  fakescope compare --backbone "$B" --data "$S/wild/train.tar" --test "$E/sd512/train.tar" --cache "$C" \
    --report "runs/cmp/$B-wild-to-sd512.json"
  fakescope compare --backbone "$B" --data "$E/sd512/train.tar" --test "$S/wild/train.tar" --cache "$C" \
    --report "runs/cmp/$B-sd512-to-wild.json"
done
