#!/usr/bin/env bash
# Writes the app registration's credentials into the stack's app secret.
# Secrets are read from standard input, never from arguments (which show in `ps`).
#
#   printf '%s' "$SECRET" | infra/set-app-secret.sh --secret-id ARN --client-id ID --tenant-id T --client-secret-stdin
#   infra/set-app-secret.sh --secret-id ARN --client-id ID --tenant-id T --pfx cert.pfx --pfx-password-stdin < password.txt
set -euo pipefail
ID= CLIENT= TENANT= MODE= PFX=
while [ $# -gt 0 ]; do
  case "$1" in
    --secret-id) ID=$2; shift 2 ;;
    --client-id) CLIENT=$2; shift 2 ;;
    --tenant-id) TENANT=$2; shift 2 ;;
    --client-secret-stdin) MODE=secret; shift ;;
    --pfx) PFX=$2; shift 2 ;;
    --pfx-password-stdin) MODE=pfx; shift ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$ID" ] && [ -n "$CLIENT" ] && [ -n "$TENANT" ] && [ -n "$MODE" ] || { echo "see --help: --secret-id, --client-id, --tenant-id and a credential are required" >&2; exit 2; }
IFS= read -r VALUE || true
[ -n "$VALUE" ] || [ "$MODE" = pfx ] || { echo "no secret on standard input" >&2; exit 2; }
if [ "$MODE" = secret ]; then
  JSON=$(jq -n --arg c "$CLIENT" --arg t "$TENANT" --arg s "$VALUE" '{client_id: $c, tenant_id: $t, client_secret: $s}')
else
  [ -f "$PFX" ] || { echo "--pfx $PFX: no such file" >&2; exit 2; }
  JSON=$(jq -n --arg c "$CLIENT" --arg t "$TENANT" --arg p "$(base64 -w0 "$PFX")" --arg w "$VALUE" \
    '{client_id: $c, tenant_id: $t, certificate: {pfx_base64: $p, password: $w}}')
fi
aws secretsmanager put-secret-value --secret-id "$ID" --secret-string "$JSON" >/dev/null
unset VALUE JSON
echo "stored the app credentials in $ID (functions pick them up within 5 minutes, or at their next cold start)"
