#!/usr/bin/env bash
# Start / stop a foreground FUSE daemon for the bench, tracking it by PID file.
# Adapted from ../shared/bench/baselines/fusectl.sh (same method as the BASELINES figures):
# faster mount polling (5 ms), an optional readahead raise, a bounded wait on stop.
#   fusectl.sh up   NAME MOUNTPOINT CMD [ARG...]   start CMD in the background, wait until mounted
#   fusectl.sh down NAME MOUNTPOINT                fusermount3 -u, then wait for that PID to exit
#   fusectl.sh hwm  NAME                           print VmHWM (peak RSS, kB) of the daemon
#   fusectl.sh ra   MOUNTPOINT                     print the mount's read_ahead_kb
# State (pid, log) lives in ${STATE:-/tmp/ocifs-bench/state}/NAME.{pid,log}.
# If OCIFS_BENCH_RA_KB is set, `up` writes it to /sys/class/bdi/<mountpoint -d>/read_ahead_kb
# once mounted (root only; the bench sets it for ocifs and ratarmount alike, or for neither).
set -uo pipefail
STATE=${STATE:-/tmp/ocifs-bench/state}
mkdir -p "$STATE"
op=$1
shift

mounted() {  # also true for a dead ("transport endpoint not connected") FUSE mount
  local m; m=$(realpath -m "$1")
  awk -v m="$m" '$2 == m {f=1} END {exit !f}' /proc/self/mounts
}

alive() {  # running, not a zombie waiting for its (re)parent to reap it
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

down() {
  local name=$1 mnt=$2 pidf=$STATE/$1.pid
  if mounted "$mnt"; then fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt"; fi
  if [ -s "$pidf" ]; then
    local pid; pid=$(cat "$pidf")
    for _ in $(seq 1 1500); do alive "$pid" || break; sleep 0.01; done
    if alive "$pid"; then kill "$pid"; sleep 0.5; kill -9 "$pid" 2>/dev/null; fi
    rm -f "$pidf"
  fi
  return 0
}

up() {
  local name=$1 mnt=$2; shift 2
  mkdir -p "$mnt"
  setsid "$@" > "$STATE/$name.log" 2>&1 < /dev/null &
  local pid=$!
  echo $pid > "$STATE/$name.pid"
  for _ in $(seq 1 24000); do
    if mountpoint -q "$mnt"; then
      if [ -n "${OCIFS_BENCH_RA_KB:-}" ]; then
        echo "$OCIFS_BENCH_RA_KB" > "/sys/class/bdi/$(mountpoint -d "$mnt")/read_ahead_kb" || true
      fi
      return 0
    fi
    alive "$pid" || { echo "daemon died:" >&2; tail -c 600 "$STATE/$name.log" >&2; return 1; }
    sleep 0.005
  done
  echo "mount timeout" >&2; return 1
}

case $op in
  up) up "$@" ;;
  down) down "$1" "$2" ;;
  hwm) awk '/^VmHWM/ {print $2}' "/proc/$(cat "$STATE/$1.pid")/status" ;;
  ra) cat "/sys/class/bdi/$(mountpoint -d "$1")/read_ahead_kb" ;;
  *) echo "usage: $0 up|down|hwm|ra NAME MOUNTPOINT [CMD...]" >&2; exit 2 ;;
esac
