# Source this to point the AWS SDK (and conn-tier --store dynamodb) at the emulator.
export AWS_ENDPOINT_URL="http://127.0.0.1:${EMULATOR_PORT:-4566}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export CHAT_TABLE_PREFIX="${CHAT_TABLE_PREFIX:-chat-}"
