#!/usr/bin/env bash
# Regenerate every committed report under reports/ from the result files committed beside it (no training).
# Usage: bash scripts/regenerate-reports.sh [OUT]   (OUT defaults to reports/; another folder gives a copy
# to diff against the committed one, e.g. after a change to analysis/)
set -euo pipefail
cd "$(dirname "$0")/.."
R=reports; O=${1:-reports}; M=$R/machines
report() { out=$1; shift; python -m analysis report "$@" --out "$O/$out" > /dev/null; }
compare() { out=$1; shift; python -m analysis compare "$@" --out "$O/compare/$out" > /dev/null; }
E=$R/evidence
# the main report: the first sweep of the evidence protocol in both modes (scripts/evidence.sh), the saddle and
# escape experiments, and the tuning experiment (figure 3 comes from its tuned runs)
report . $E/quick-default-a.json $E/quick-fast-a.json $R/saddle/saddle.json $R/saddle/escape.json $R/tuning/tuning.json
# the evidence protocol's replication: each mode's two sweeps side by side
mkdir -p "$O/evidence"
# (kept as evidence, each with its own comparison: first-3-repeats/, the protocol's first run, 3 repeats per cell,
# every repeat in the sweep's one process; in-one-process/, its second run, 5 repeats, still in one process)
for mode in default fast; do
    python -m analysis replicate $E/quick-$mode-a.json $E/quick-$mode-b.json > "$O/evidence/replicate-$mode.txt"
    for old in first-3-repeats in-one-process; do
        mkdir -p "$O/evidence/$old"
        python -m analysis replicate $E/$old/quick-$mode-a.json $E/$old/quick-$mode-b.json \
            > "$O/evidence/$old/replicate-$mode.txt"
    done
done
report machines $M/2threads.json $M/1thread.json
report machines/EPYC-tf-quick $M/EPYC-tf-quick.json $M/EPYC-tf-quick-fast.json
report saddle $R/saddle/saddle.json $R/saddle/escape.json
report tuning $R/tuning/tuning.json
compare cpu-2-vs-1-threads $M/2threads.json $M/1thread.json
compare cpu-tf-vs-h200-jax-quick $M/EPYC-tf-quick.json $M/H200-jax-quick.json --allow-mismatch
compare cpu-vs-h200-jax-lecture $M/EPYC-jax-lecture-2ep.json $M/H200-jax-lecture-2ep.json
compare cpu-vs-h200-jax-quick $M/EPYC-jax-quick.json $M/H200-jax-quick.json
echo "reports regenerated under $O/"
# committed evidence must be rebuildable from its commit: name every result file that is not
python -m analysis provenance $(find $R \( -name '*.json' -o -name '*.jsonl' \) ! -path '*/overhead/*' | sort) \
    2> /dev/null | sed 's/^/not rebuildable: /' || true
