#!/usr/bin/env bash
# Submit a sweep to a running Ray cluster with `ray job submit` (see README, "On a cluster").
#
#   experiments/submit.sh SPEC [dfa-ray sweep options...]
#   e.g. RAY_DASHBOARD=http://127.0.0.1:8265 experiments/submit.sh experiments/cifar100_crd13.yaml \
#          --storage /shared/dfa-ray
#
# The job runs `dfa-ray sweep SPEC --address auto` on the head node, with this folder as its
# working directory (the virtual environment, results and checkpoints are left out of the
# upload: Ray caps it near 100 MiB). dfa-ray must be installed on every node, in the Python
# that ran `ray start`. Storage must be a folder every node sees (NFS, a shared disk).
# Token authentication stays on (Ray 2.60's default for clusters started with `ray start`):
# the client reads the token from ~/.ray/auth_token. Keep the dashboard on 127.0.0.1 and reach
# it through an SSH tunnel (ssh -L 8265:127.0.0.1:8265 head) rather than opening it to a network.
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 SPEC [dfa-ray sweep options...]" >&2
  exit 2
fi
spec=$1
shift
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
exec ray job submit --address "${RAY_DASHBOARD:-http://127.0.0.1:8265}" --working-dir . \
  --runtime-env-json '{"excludes": [".venv", ".git", "runs", "benchmarks/results", "*.pt", "*.parquet"]}' \
  -- dfa-ray sweep "$spec" --address auto "$@"
