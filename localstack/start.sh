#!/usr/bin/env bash
# Starts the AWS emulator (moto_server) on 127.0.0.1:${EMULATOR_PORT:-4566}
# and creates the tables of infra/template.yaml. Installs the pinned
# emulator into localstack/.venv on first use. Safe to run twice: an
# emulator this script started on that port is reused.
#
#   localstack/start.sh        then   source localstack/env.sh
#
# EMULATOR_STATE_DIR (default: this folder) holds moto.pid and moto.log, so
# several runs (CI and a developer's, say) can each own an emulator on its
# own port. If start-up fails half-way, the emulator it started is stopped.
set -euo pipefail
cd "$(dirname "$0")"
PORT="${EMULATOR_PORT:-4566}"
STATE="${EMULATOR_STATE_DIR:-$PWD}"
mkdir -p "$STATE"
PIDFILE="$STATE/moto.pid"
LOG="$STATE/moto.log"
ENDPOINT="http://127.0.0.1:${PORT}"

if ! .venv/bin/python -c "import moto, boto3, yaml" 2>/dev/null; then
  echo "installing the emulator into localstack/.venv (pinned in requirements.txt)..."
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
fi

up() { .venv/bin/python - "$ENDPOINT" <<'PY' 2>/dev/null
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1] + "/moto-api/", timeout=1)
except Exception:
    sys.exit(1)
PY
}

ours() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

started=""
cleanup_on_failure() {
  if [ -n "$started" ]; then
    echo "start-up failed; stopping the emulator it started" >&2
    EMULATOR_STATE_DIR="$STATE" ./stop.sh >&2 || true
  fi
}
trap cleanup_on_failure ERR

if up; then
  if ours; then
    echo "emulator already running at $ENDPOINT (pid $(cat "$PIDFILE"))"
  else
    echo "port $PORT answers like an emulator that this state dir ($STATE) did not start; reusing it" >&2
  fi
else
  # moto_server, one request at a time, so conditional writes are atomic as
  # in DynamoDB (moto-serial.py says why).
  .venv/bin/python moto-serial.py -H 127.0.0.1 -p "$PORT" > "$LOG" 2>&1 &
  echo $! > "$PIDFILE"
  started=1
  for _ in $(seq 1 100); do
    up && break
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      echo "the emulator exited; see $LOG:" >&2
      tail -20 "$LOG" >&2
      false
    fi
    sleep 0.2
  done
  up || { echo "the emulator did not answer at $ENDPOINT within 20 s" >&2; false; }
  echo "emulator (moto_server) running at $ENDPOINT, pid $(cat "$PIDFILE")"
fi

export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}" AWS_REGION="${AWS_REGION:-us-east-1}"
.venv/bin/python create-tables.py --endpoint "$ENDPOINT" --prefix "${CHAT_TABLE_PREFIX:-chat-}"
