#!/usr/bin/env bash
# Replaces the signing key with a new random one.
#
#   infra/rotate-signing-key.sh --stack relay365
#
# What it invalidates: connect links and sign-ins in progress, and the
# clientState of existing Graph subscriptions (Graph cannot change a
# subscription's clientState). Afterwards, re-create each connection's
# subscriptions with POST /connections/{id}/resubscribe (IAM-signed, like the
# other admin routes; it creates new subscriptions with the new key's
# clientState, then deletes the old ones), or notifications will be dropped
# as forged. Deliveries to flows are not affected: they are signed with the
# event signing secret (relay365/event-signing-key), which this does not touch.
set -euo pipefail
STACK=${2:-}
[ "${1:-}" = --stack ] && [ -n "$STACK" ] || { echo "usage: $0 --stack NAME" >&2; exit 2; }
PREFIX=$(aws cloudformation describe-stacks --stack-name "$STACK" --query "Stacks[0].Parameters[?ParameterKey=='SecretPrefix'].ParameterValue" --output text)
KEY=$(aws secretsmanager get-random-password --password-length 64 --exclude-punctuation --query RandomPassword --output text)
aws secretsmanager put-secret-value --secret-id "${PREFIX}signing-key" --secret-string "$KEY" >/dev/null
unset KEY
echo "rotated ${PREFIX}signing-key; now call POST /connections/{id}/resubscribe for every connection (GET /connections lists them)"
