#!/usr/bin/env bash
# Rotates a deployment's keys without losing a notification or an event.
#
#   infra/rotate-signing-key.sh --stack relay365 [--grace-days 7]   # the signing key
#   infra/rotate-signing-key.sh --stack relay365 --finish            # drop its old key
#   infra/rotate-signing-key.sh --stack relay365 --event-key         # the event signing secret
#   infra/rotate-signing-key.sh --stack relay365 --event-key --finish
#
# The signing key (subscription clientState, connect links, sign-in state and
# cookie; flow receivers never hold it), in one command:
#   1. the secret becomes {"current": NEW, "previous": OLD, "previous_until": T}:
#      everything new is made with NEW, and until T (default 7 days) the
#      functions still accept what OLD made, so subscriptions keep delivering;
#   2. it waits one secret TTL (RELAY365_SECRET_TTL_SECONDS, 300 s): by then
#      every warm container uses NEW;
#   3. it runs the renewal (the connections function with a scheduled event),
#      which recreates every subscription whose clientState was made with
#      another key and deletes the old one at Graph once the new one exists,
#      until none is left on OLD (GET /connections/{id} shows each
#      subscription's "signing_key": "current" or "previous");
#   4. it says the old key may go: `--finish` drops it now, or it stops being
#      accepted at T by itself.
# A subscription that cannot be recreated (say its connection needs a new
# sign-in) is listed with the reason; run the script with --resume once fixed.
#
# The event signing secret (the one key flow receivers hold):
#   --event-key writes {"keys": [NEW, OLD]}: each event carries one v1= per
#   key, so receivers that know either key verify every event. Give receivers
#   NEW (aws secretsmanager get-secret-value --secret-id PREFIXevent-signing-key
#   shows both; NEW is the first), then --event-key --finish signs with NEW only.
set -euo pipefail
STACK=""
GRACE_DAYS=7
MODE=rotate
WHICH=signing
usage() { echo "usage: $0 --stack NAME [--grace-days N] [--event-key] [--finish | --resume]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --stack) STACK=${2:-}; shift 2 ;;
    --grace-days) GRACE_DAYS=${2:-}; shift 2 ;;
    --event-key) WHICH=event; shift ;;
    --finish) MODE=finish; shift ;;
    --resume) MODE=resume; shift ;;
    *) usage ;;
  esac
done
[ -n "$STACK" ] || usage
PREFIX=$(aws cloudformation describe-stacks --stack-name "$STACK" \
  --query "Stacks[0].Parameters[?ParameterKey=='SecretPrefix'].ParameterValue" --output text)
FUNCTION=$(aws cloudformation describe-stack-resource --stack-name "$STACK" \
  --logical-resource-id ConnectionsFunction --query StackResourceDetail.PhysicalResourceId --output text)
TTL=$(aws lambda get-function-configuration --function-name "$FUNCTION" \
  --query "Environment.Variables.RELAY365_SECRET_TTL_SECONDS" --output text 2>/dev/null || true)
case "$TTL" in ''|None) TTL=300 ;; esac
if [ "$WHICH" = event ]; then SECRET="${PREFIX}event-signing-key"; else SECRET="${PREFIX}signing-key"; fi

# Builds the new secret value from the old one (in the environment, never in argv).
new_value() {
  OLD=$(aws secretsmanager get-secret-value --secret-id "$SECRET" --query SecretString --output text) \
  NEW=$(aws secretsmanager get-random-password --password-length 64 --exclude-punctuation --query RandomPassword --output text) \
  UNTIL=$(( $(date +%s) + GRACE_DAYS * 86400 )) WHICH="$WHICH" MODE="$MODE" python3 -c '
import json, os
old, mode, which = os.environ["OLD"], os.environ["MODE"], os.environ["WHICH"]
try:
    parsed = json.loads(old)
except ValueError:
    parsed = old
if which == "event":
    keys = parsed["keys"] if isinstance(parsed, dict) else [parsed]
    print(json.dumps({"keys": [keys[0]] if mode == "finish" else [os.environ["NEW"], keys[0]]}))
else:
    current = parsed.get("current") if isinstance(parsed, dict) else parsed
    if mode == "finish":
        print(json.dumps({"current": current}))
    else:
        print(json.dumps({"current": os.environ["NEW"], "previous": current, "previous_until": int(os.environ["UNTIL"])}))
'
}

put() {
  local value
  value=$(new_value)
  aws secretsmanager put-secret-value --secret-id "$SECRET" --secret-string "$value" >/dev/null
}

wait_ttl() {
  echo "waiting ${TTL} s (one secret TTL) until every warm container uses the new value..."
  sleep "$TTL"
}

# Runs the renewal until no subscription is left on the old key.
rekey() {
  local out report left
  out=$(mktemp)
  for attempt in 1 2 3 4 5; do
    aws lambda invoke --function-name "$FUNCTION" --cli-binary-format raw-in-base64-out \
      --payload '{"detail-type": "Scheduled Event", "source": "relay365.rotate-signing-key", "detail": {}}' "$out" >/dev/null
    report=$(cat "$out")
    left=$(python3 -c 'import json,sys; print(json.load(sys.stdin).get("on_previous_key", 0))' <<<"$report")
    echo "renewal run $attempt: $report"
    if [ "$left" = 0 ]; then rm -f "$out"; return 0; fi
    sleep 60
  done
  rm -f "$out"
  echo "$left subscription(s) are still on the old key (see \"failed\" above for why)." >&2
  echo "Fix them, then run: $0 --stack $STACK --resume. The old key is accepted until the grace ends." >&2
  exit 1
}

case "$WHICH/$MODE" in
  signing/rotate)
    put
    echo "rotated $SECRET; the old key is accepted for $GRACE_DAYS days."
    wait_ttl
    rekey
    echo "Every subscription uses the new key. The old one is no longer needed:"
    echo "  $0 --stack $STACK --finish    # drops it now (else it stops working when the grace ends)"
    ;;
  signing/resume)
    rekey
    echo "Every subscription uses the new key. Drop the old one with: $0 --stack $STACK --finish"
    ;;
  signing/finish)
    put
    echo "the old signing key is gone from $SECRET; it stops being accepted within ${TTL} s."
    ;;
  event/rotate)
    put
    wait_ttl
    echo "Events are now signed with both keys (one v1= each). Give flow receivers the new key"
    echo "(the first of \"keys\" in $SECRET), then: $0 --stack $STACK --event-key --finish"
    ;;
  event/finish)
    put
    echo "events are signed with the new key only within ${TTL} s."
    ;;
  *) usage ;;
esac
