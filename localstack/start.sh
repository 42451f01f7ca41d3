#!/usr/bin/env bash
# Starts the AWS emulator (moto_server) on 127.0.0.1:4566 and creates the
# tables of infra/template.yaml. Installs the pinned emulator into
# localstack/.venv on first use. Safe to run twice: a running emulator is reused.
#
#   localstack/start.sh        then   source localstack/env.sh
set -euo pipefail
cd "$(dirname "$0")"
PORT="${EMULATOR_PORT:-4566}"
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

if up; then
  echo "emulator already running at $ENDPOINT"
else
  .venv/bin/moto_server -H 127.0.0.1 -p "$PORT" > moto.log 2>&1 &
  echo $! > moto.pid
  for _ in $(seq 1 100); do
    up && break
    if ! kill -0 "$(cat moto.pid)" 2>/dev/null; then
      echo "the emulator exited; see localstack/moto.log:" >&2
      tail -20 moto.log >&2
      exit 1
    fi
    sleep 0.2
  done
  up || { echo "the emulator did not answer at $ENDPOINT within 20 s" >&2; exit 1; }
  echo "emulator (moto_server) running at $ENDPOINT, pid $(cat moto.pid)"
fi

export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}" AWS_REGION="${AWS_REGION:-us-east-1}"
.venv/bin/python create-tables.py --endpoint "$ENDPOINT" --prefix "${CHAT_TABLE_PREFIX:-chat-}"
