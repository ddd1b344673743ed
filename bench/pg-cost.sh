#!/usr/bin/env bash
# PostgreSQL's own cost per webhook in a production load run: CPU of every PostgreSQL
# process (backends that exited during the run are counted through the postmaster's
# child times) and WAL written, each divided by the webhooks accepted. Less noisy than
# throughput on a shared machine, since it does not depend on how fast the rest ran.
#
# usage: bench/pg-cost.sh [LOAD_BINARY] [SECONDS]
#   LOAD_BINARY defaults to target/release/hookgate-load (`cargo build --release -p
#   hookgate-load`); run it on an otherwise idle PostgreSQL (127.0.0.1:5432), as root or
#   as the postgres user, to read its processes.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
load=${1:-target/release/hookgate-load}
seconds=${2:-8}
wal_bytes() { psql -h 127.0.0.1 -U postgres test -At -c "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"; }

sleep 1
cpu0=$(pg_ticks); wal0=$(wal_bytes)
out=$("$load" --mode production --seconds "$seconds" --warmup-seconds 2 2>&1)
sleep 2 # let the run's backends exit and be reaped
cpu1=$(pg_ticks); wal1=$(wal_bytes)
accepted=$(accepted_in "$out")
rate=$(rate_in "$out" production)
hz=$(getconf CLK_TCK)
echo "production: ${rate}/s, ${accepted} accepted;" \
  "PostgreSQL $(( (cpu1 - cpu0) * 1000000 / hz / accepted )) µs CPU and" \
  "$(( (wal1 - wal0) / accepted )) bytes of WAL a webhook"
