#!/usr/bin/env bash
# Replaces the signing key with a new random one, keeping the old one as
# "previous" for a grace period so existing subscriptions keep verifying.
#
#   infra/rotate-signing-key.sh --stack relay365 [--grace-days 7]
#
# The secret becomes {"current": NEW, "previous": OLD, "previous_until": T}.
# Until T the webhook accepts notifications whose clientState was made with
# the old key; everything new (clientState, connect links, sign-in state) is
# made with the new key. Connect links and sign-ins in progress made with the
# old key stop working at once: open a fresh link from GET /connections/{id}.
#
# Then, before T, recreate each connection's subscriptions with
# POST /connections/{id}/resubscribe (IAM-signed, like the other admin
# routes): Graph cannot change a subscription's clientState. After that (and
# once warm function containers have been replaced, which a deployment or a
# few hours of quiet does: they read the key at start) the old key may go.
#
# Flow receivers are not affected: events are signed with the event signing
# secret (relay365/event-signing-key), which this does not touch.
set -euo pipefail
STACK=""
GRACE_DAYS=7
while [ $# -gt 0 ]; do
  case "$1" in
    --stack) STACK=${2:-}; shift 2 ;;
    --grace-days) GRACE_DAYS=${2:-}; shift 2 ;;
    *) echo "usage: $0 --stack NAME [--grace-days N]" >&2; exit 2 ;;
  esac
done
[ -n "$STACK" ] || { echo "usage: $0 --stack NAME [--grace-days N]" >&2; exit 2; }
PREFIX=$(aws cloudformation describe-stacks --stack-name "$STACK" --query "Stacks[0].Parameters[?ParameterKey=='SecretPrefix'].ParameterValue" --output text)
OLD=$(aws secretsmanager get-secret-value --secret-id "${PREFIX}signing-key" --query SecretString --output text)
NEW=$(aws secretsmanager get-random-password --password-length 64 --exclude-punctuation --query RandomPassword --output text)
UNTIL=$(( $(date +%s) + GRACE_DAYS * 86400 ))
# The JSON is built from the environment (the old value may already be JSON).
VALUE=$(OLD="$OLD" NEW="$NEW" UNTIL="$UNTIL" python3 -c '
import json, os
old = os.environ["OLD"]
try:
    old = json.loads(old).get("current", old)
except ValueError:
    pass
print(json.dumps({"current": os.environ["NEW"], "previous": old, "previous_until": int(os.environ["UNTIL"])}))
')
unset OLD NEW
aws secretsmanager put-secret-value --secret-id "${PREFIX}signing-key" --secret-string "$VALUE" >/dev/null
unset VALUE
echo "rotated ${PREFIX}signing-key; the old key is accepted for clientState until $(date -u -d "@$UNTIL" +%Y-%m-%dT%H:%M:%SZ)."
echo "Now call POST /connections/{id}/resubscribe for every connection (GET /connections lists them)."
