#!/usr/bin/env bash
# Where a webhook's CPU goes in one load run: microseconds of CPU per accepted webhook for
# the load tool's process (the gateway and its client share it), PostgreSQL (every
# process, exited backends through the postmaster's child times), redis-server and
# nats-server, and what the machine left idle. A split, unlike throughput, does not move
# much with how fast the rest of this shared machine happens to be.
#
# usage: bench/cpu-split.sh [MODE] [LOAD_BINARY] [SECONDS]
#   MODE is embedded or production (default); LOAD_BINARY defaults to
#   target/release/hookgate-load (`cargo build --release -p hookgate-load`). Run as root
#   (or as the servers' users) on otherwise idle servers on 127.0.0.1.
set -euo pipefail
mode=${1:-production}
load=${2:-target/release/hookgate-load}
seconds=${3:-8}
hz=$(getconf CLK_TCK)
source "$(dirname "$0")/lib.sh"

redis_ticks() { ticks_of $(pgrep -x redis-server); }
nats_ticks() { ticks_of $(pgrep -x nats-server); }
idle_ticks() { awk '/^cpu / {print $5 + $6}' /proc/stat; }

sleep 1
pg0=$(pg_ticks); redis0=$(redis_ticks); nats0=$(nats_ticks); idle0=$(idle_ticks)
"$load" --mode "$mode" --seconds "$seconds" --warmup-seconds 2 >/tmp/cpu-split.$$ 2>&1 &
load_pid=$!
# The load process's own ticks are read just before it exits: sample until it is gone.
load_ticks=0
while kill -0 "$load_pid" 2>/dev/null; do
  t=$(ticks_of "$load_pid")
  [ "$t" -gt 0 ] && load_ticks=$t
  sleep 0.2
done
wait "$load_pid"
idle1=$(idle_ticks)
sleep 2 # let the run's backends exit and be reaped
pg1=$(pg_ticks); redis1=$(redis_ticks); nats1=$(nats_ticks)
out=$(cat /tmp/cpu-split.$$); rm -f /tmp/cpu-split.$$
accepted=$(accepted_in "$out")
rate=$(rate_in "$out" "$mode")
per() { echo $(( $1 * 1000000 / hz / accepted )); }
echo "$mode: ${rate}/s, ${accepted} accepted; µs CPU a webhook (warm-up included):" \
  "load process $(per "$load_ticks"), PostgreSQL $(per $((pg1 - pg0)))," \
  "Redis $(per $((redis1 - redis0))), NATS $(per $((nats1 - nats0)))," \
  "idle $(per $((idle1 - idle0)))"
