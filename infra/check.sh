#!/usr/bin/env bash
# Offline checks of infra/template.yaml: cfn-lint and `sam validate --lint`.
# Installs both (pinned in requirements.txt) into infra/.venv when missing.
set -euo pipefail
cd "$(dirname "$0")"
if ! .venv/bin/cfn-lint --version >/dev/null 2>&1 || ! .venv/bin/sam --version >/dev/null 2>&1; then
  echo "installing cfn-lint and aws-sam-cli into infra/.venv ..."
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
fi
.venv/bin/cfn-lint template.yaml
echo "cfn-lint: template.yaml passes"
SAM_CLI_TELEMETRY=0 AWS_REGION="${AWS_REGION:-us-east-1}" .venv/bin/sam validate --lint -t template.yaml
