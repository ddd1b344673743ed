# Stops one set of private test servers once no test process holds the set's lease, then
# deletes their data. Started detached by the first test process of a run; every test
# process using the set holds a shared flock on SET/lease. While a `cargo test` that ran
# one of them (listed in SET/runs) still runs, it waits GRACE seconds for its next test
# binary to take the lease; once none runs, two seconds.
#
# Arguments: ROOT SET GRACE PID:SIGNAL... -- EXTRA_DIR...
# ROOT/lock is the setup lock: test processes hold it while they find or start a set and
# take its lease, so stopping under it cannot race with a process about to use the set.
root=$1 set=$2 grace=$3
shift 3
targets=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  targets="$targets $1"
  shift
done
[ "${1:-}" = "--" ] && shift

# Whether process $1 still runs: a zombie (its parent, the test process that started it,
# has not reaped it yet) has stopped.
running() {
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$state" ] && [ "$state" != Z ]
}

exec 9<"$set/lease"
idle=0
while sleep 1; do
  if flock -n -x 9; then
    flock -u 9
    idle=$((idle + 1))
  else
    idle=0
  fi
  limit=2
  for run in $(cat "$set/runs" 2>/dev/null); do
    running "$run" && limit=$grace
  done
  [ "$idle" -ge "$limit" ] || continue
  exec 8<"$root/lock"
  if flock -n -x 8 && flock -n -x 9; then
    for t in $targets; do kill -s "${t#*:}" "${t%%:*}" 2>/dev/null; done
    for _ in $(seq 1 100); do
      alive=0
      for t in $targets; do running "${t%%:*}" && alive=1; done
      [ "$alive" = 0 ] && break
      sleep 0.1
    done
    for t in $targets; do running "${t%%:*}" && kill -s KILL "${t%%:*}" 2>/dev/null; done
    if [ "$(cat "$root/current" 2>/dev/null)" = "$(basename "$set")" ]; then
      rm -f "$root/current"
    fi
    rm -rf "$set" "$@"
    exit 0
  fi
  exec 8<&-
  idle=0
done
