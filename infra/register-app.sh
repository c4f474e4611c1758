#!/usr/bin/env bash
# Creates or updates the relay365 app registration in Entra with the az CLI,
# registers the stack's redirect URIs, adds a client secret or uploads a
# certificate, and stores the result in the stack's app secret.
#
#   infra/register-app.sh --stack relay365 [--cloud global|usgov-l4|usgov-l5|china]
#       [--features mail-read,calendar-read,send,send-shared,mail-write]
#       [--client-secret | --certificate cert.pem --pfx cert.pfx] [--app-id ID] [--single-tenant]
#
# Needs: az (logged in to the cloud's tenant), aws (credentials for the stack's account), jq.
set -euo pipefail
cd "$(dirname "$0")"

STACK= CLOUD=global FEATURES=mail-read,calendar-read,send APP_ID= CRED=secret CERT= PFX= AUDIENCE=AzureADMultipleOrgs
while [ $# -gt 0 ]; do
  case "$1" in
    --stack) STACK=$2; shift 2 ;;
    --cloud) CLOUD=$2; shift 2 ;;
    --features) FEATURES=$2; shift 2 ;;
    --app-id) APP_ID=$2; shift 2 ;;
    --client-secret) CRED=secret; shift ;;
    --certificate) CRED=certificate; CERT=$2; shift 2 ;;
    --pfx) PFX=$2; shift 2 ;;
    --single-tenant) AUDIENCE=AzureADMyOrg; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$STACK" ] || { echo "--stack is required: the name you gave sam deploy" >&2; exit 2; }
case "$CLOUD" in
  global) AZ_CLOUD=AzureCloud ;;
  usgov-l4|usgov-l5) AZ_CLOUD=AzureUSGovernment ;;
  china) AZ_CLOUD=AzureChinaCloud ;;
  *) echo "--cloud must be global, usgov-l4, usgov-l5 or china" >&2; exit 2 ;;
esac
[ "$(az cloud show --query name -o tsv)" = "$AZ_CLOUD" ] || { echo "switching az to $AZ_CLOUD; run 'az login' if asked" >&2; az cloud set --name "$AZ_CLOUD"; }

output() { aws cloudformation describe-stacks --stack-name "$STACK" --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue" --output text; }
REDIRECT=$(output RedirectUri); ADMIN_REDIRECT=$(output AdminConsentRedirectUri); APP_SECRET_ARN=$(output AppSecretArn)
[ -n "$REDIRECT" ] && [ "$REDIRECT" != None ] || { echo "stack $STACK has no RedirectUri output: deploy it first" >&2; exit 1; }

# Keep the permissions the chosen features need (the implicit sign-in scopes always).
ACCESS=$(jq --arg f ",$FEATURES," '[.requiredResourceAccess[] | {resourceAppId, resourceAccess: [.resourceAccess[]
  | select((has("_feature") | not) or ($f | contains("," + ._feature + ","))) | {id, type}]}]' app-manifest.json)

if [ -z "$APP_ID" ]; then
  APP_ID=$(az ad app list --display-name relay365 --query '[0].appId' -o tsv)
fi
if [ -z "$APP_ID" ]; then
  APP_ID=$(az ad app create --display-name relay365 --sign-in-audience "$AUDIENCE" --query appId -o tsv)
  echo "created app $APP_ID"
fi
az ad app update --id "$APP_ID" --sign-in-audience "$AUDIENCE" --web-redirect-uris "$REDIRECT" "$ADMIN_REDIRECT" \
  --required-resource-accesses "$ACCESS"
TENANT=$(az account show --query tenantId -o tsv)

if [ "$CRED" = secret ]; then
  SECRET=$(az ad app credential reset --id "$APP_ID" --append --display-name "relay365 $(date +%F)" --years 1 --query password -o tsv)
  printf '%s' "$SECRET" | ./set-app-secret.sh --secret-id "$APP_SECRET_ARN" --client-id "$APP_ID" --tenant-id "$TENANT" --client-secret-stdin
  unset SECRET
else
  [ -f "$CERT" ] && [ -f "$PFX" ] || { echo "--certificate needs the public cert (PEM) and --pfx the PFX with its private key" >&2; exit 2; }
  az ad app credential reset --id "$APP_ID" --append --cert "@$CERT" >/dev/null
  ./set-app-secret.sh --secret-id "$APP_SECRET_ARN" --client-id "$APP_ID" --tenant-id "$TENANT" --pfx "$PFX" --pfx-password-stdin
fi
cat <<MSG
Done. App $APP_ID in tenant $TENANT ($AZ_CLOUD):
  redirect URIs: $REDIRECT
                 $ADMIN_REDIRECT
App-only connections need admin consent: each connection's admin_consent_url asks for it.
MSG
