#!/bin/sh
# Recreate the private engine copies the experiments in BENCHMARKS.md measured:
#   bench/tmp/base/engine.ts   src/engine/engine.ts at $BASE, unchanged
#   bench/tmp/exp/engine.ts    the same with engine-shared-answers-bounded-fast-load.patch
#   bench/tmp/exp/certs-fast.ts src/certs.ts at $BASE with certs-meta-from-der.patch
# (bench/tmp/ is gitignored; imports are rewritten to the live src/ for everything else).
# Then measure with the unchanged benches, e.g.:
#   CERTSTATE_BENCH_ENGINE=bench/tmp/base/engine.ts npm run bench:herd
#   CERTSTATE_BENCH_ENGINE=bench/tmp/exp/engine.ts  npm run bench:herd
set -eu
BASE=${BASE:-3d929f2}
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src/engine" bench/tmp/base bench/tmp/exp
git show "$BASE:src/engine/engine.ts" > "$work/src/engine/engine.ts"
git show "$BASE:src/certs.ts" > "$work/src/certs.ts"
rewrite() { # $1: file in src layout, $2: its directory under src ('' or 'engine')
  sed -e "s#from '\.\./#from '@SRC@/#g" -e "s#from '\./#from '../../../src/$2${2:+/}#g" -e "s#from '@SRC@/#from '../../../src/#g" "$1"
}
rewrite "$work/src/engine/engine.ts" engine > bench/tmp/base/engine.ts
(cd "$work" && patch -s -p1 < "$OLDPWD/bench/experiments/engine-shared-answers-bounded-fast-load.patch" && patch -s -p1 < "$OLDPWD/bench/experiments/certs-meta-from-der.patch")
rewrite "$work/src/engine/engine.ts" engine > bench/tmp/exp/engine.ts
# The experiment's parseCertificateMetaFast lives in the private certs copy.
sed -i -e "s#import { parseCertificateMetaFast } from '../../../src/certs.js';#import { parseCertificateMetaFast } from './certs-fast.js';#" bench/tmp/exp/engine.ts
rewrite "$work/src/certs.ts" '' > bench/tmp/exp/certs-fast.ts
for f in bench/tmp/base/engine.ts bench/tmp/exp/engine.ts bench/tmp/exp/certs-fast.ts; do
  sed -i '1i // @ts-nocheck -- private experiment copy (gitignored): kept out of the shared typecheck' "$f"
done
echo "wrote bench/tmp/base/engine.ts, bench/tmp/exp/engine.ts, bench/tmp/exp/certs-fast.ts (from $BASE)"
