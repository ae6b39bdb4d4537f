#!/usr/bin/env bash
# `make main` (or `make test`) from a fresh clone, install included, with a timestamp on every line
# of its output, so one run gives the install, toy-build, sweep and report times (issue 23's aims:
# make main <= 10 min, the test suite <= 6 min, on 2 cores). Measure on otherwise quiet cores and
# write the `uptime` load printed before and after beside the figure.
#
#   benchmarks/fresh_clone.sh            # make main from a clone of HEAD
#   benchmarks/fresh_clone.sh test       # make test
#   benchmarks/fresh_clone.sh main REF   # another commit or branch
set -euo pipefail
what=${1:-main}
ref=${2:-HEAD}
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
sha=$(git -C "$repo" rev-parse "$ref")
dir=$(mktemp -d /tmp/editdecay-fresh-XXXXXX)
git clone --quiet --no-local "$repo" "$dir/editdecay"
cd "$dir/editdecay"
git checkout --quiet "$sha"
echo "fresh clone of $sha in $dir/editdecay; nproc $(nproc); $(uptime)"
start=$(date +%s)
set +e
make "$what" 2>&1 | while IFS= read -r line; do printf '%5ds  %s\n' "$(( $(date +%s) - start ))" "$line"; done \
    | tee "$dir/make-$what.log"
status=${PIPESTATUS[0]}
set -e
echo "make $what: $(( $(date +%s) - start )) s wall (exit $status); $(uptime)"
echo "log: $dir/make-$what.log"
