#!/usr/bin/env bash
# Stops the emulator that start.sh started (its data is in memory and goes with it).
cd "$(dirname "$0")"
if [ -f moto.pid ]; then
  kill "$(cat moto.pid)" 2>/dev/null && echo "emulator stopped" || true
  rm -f moto.pid
fi
