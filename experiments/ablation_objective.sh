#!/usr/bin/env bash
# The search-objective ablation: ablation_aggregation.yaml with the bridge (default), the TS
# path only, the ST path only and the plain student loss as the upper objective; each variant
# is a sweep of its own name, so their genotypes and distillations stay apart. Teachers are
# trained once (the teacher store is shared). Extra arguments go to every `dfa-ray sweep`
# (e.g. --storage /shared/dfa-ray --address auto).
set -euo pipefail
spec="$(dirname "$0")/ablation_aggregation.yaml"
dfa-ray sweep "$spec" --set name=ablation_bridge "$@"
dfa-ray sweep "$spec" --set name=ablation_ts_only --set search.options.gamma_st=0 \
  --set 'distill.methods=[dfa]' "$@"
dfa-ray sweep "$spec" --set name=ablation_st_only --set search.options.gamma_ts=0 \
  --set 'distill.methods=[dfa]' "$@"
dfa-ray sweep "$spec" --set name=ablation_student_loss --set search.options.objective=student \
  --set 'distill.methods=[dfa]' "$@"
