# Shared by the bench scripts: CPU ticks of processes and the figures of a load run's
# output. Source it; it defines functions only.

ticks_of() { # pids...: user + system ticks
  for pid in "$@"; do awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || true; done |
    awk '{s += $1} END {print s + 0}'
}

# Every PostgreSQL process's ticks, with backends that exited during the run counted
# through the postmaster's child times.
pg_ticks() {
  local postmaster
  postmaster=$(pgrep -u postgres -o postgres)
  {
    ticks_of $(pgrep -u postgres postgres)
    awk '{print $16 + $17}' "/proc/$postmaster/stat"
  } | awk '{s += $1} END {print s}'
}

# From hookgate-load's output: the webhooks accepted (warm-up included), and MODE's rate.
accepted_in() { grep -Eo '[0-9]+ webhooks accepted' <<<"$1" | grep -Eo '^[0-9]+'; }
rate_in() { grep "^| $2" <<<"$1" | awk -F'|' '{gsub(/ /, "", $3); print $3}'; }
