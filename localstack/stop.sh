#!/usr/bin/env bash
# Stops the emulator that start.sh started (its data is in memory and goes
# with it), and waits until it has exited. EMULATOR_STATE_DIR as for start.sh.
cd "$(dirname "$0")"
STATE="${EMULATOR_STATE_DIR:-$PWD}"
PIDFILE="$STATE/moto.pid"
[ -f "$PIDFILE" ] || exit 0
pid="$(cat "$PIDFILE")"
if kill "$pid" 2>/dev/null; then
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
  fi
  echo "emulator stopped (pid $pid)"
fi
rm -f "$PIDFILE"
