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
#
# EMULATOR=dynalite starts dynalite (npm, pinned in dynalite/package.json)
# instead: about three times moto's request rate here, and it keeps up with
# tens of thousands of connection records, but it has no transactions (group
# sends), TTL or streams. For the cluster benchmarks only; the tests use moto.
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

KIND="${EMULATOR:-moto}"
case "$KIND" in
  moto|dynalite) ;;
  *) echo "EMULATOR must be moto or dynalite, not $KIND" >&2; exit 2 ;;
esac

up() { .venv/bin/python - "$ENDPOINT" "$KIND" <<'PY' 2>/dev/null
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1] + ("/moto-api/" if sys.argv[2] == "moto" else "/"), timeout=1)
except urllib.error.HTTPError:
    sys.exit(0 if sys.argv[2] == "dynalite" else 1)  # dynalite answers GET / with 400
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
  if [ "$KIND" = dynalite ]; then
    if [ ! -x dynalite/node_modules/.bin/dynalite ]; then
      echo "installing dynalite (npm, pinned in localstack/dynalite/package-lock.json)..."
      (cd dynalite && npm ci --no-audit --no-fund --loglevel=error)
    fi
    # In memory (no --path): a benchmark's store, gone when it stops.
    dynalite/node_modules/.bin/dynalite --host 127.0.0.1 --port "$PORT" > "$LOG" 2>&1 &
  else
    # moto_server, one request at a time, so conditional writes are atomic
    # as in DynamoDB (moto-serial.py says why).
    .venv/bin/python moto-serial.py -H 127.0.0.1 -p "$PORT" > "$LOG" 2>&1 &
  fi
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
  echo "emulator ($KIND) running at $ENDPOINT, pid $(cat "$PIDFILE")"
fi

export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}" AWS_REGION="${AWS_REGION:-us-east-1}"
.venv/bin/python create-tables.py --endpoint "$ENDPOINT" --prefix "${CHAT_TABLE_PREFIX:-chat-}"
