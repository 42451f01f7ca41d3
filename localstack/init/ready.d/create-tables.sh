#!/usr/bin/env bash
# LocalStack init hook: creates the tables of infra/template.yaml (mounted
# by docker-compose.yml) once LocalStack's DynamoDB is ready. The LocalStack
# image ships python3 with boto3; PyYAML comes with it too.
set -euo pipefail
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION="${AWS_REGION:-us-east-1}"
python3 /opt/chat/localstack/create-tables.py \
  --endpoint http://localhost:4566 \
  --template /opt/chat/infra/template.yaml \
  --prefix "${CHAT_TABLE_PREFIX:-chat-}"
