"""The Python baseline of the benchmarks: the handlers a Python team would
write for relay365's paths, with the libraries it would use (boto3 for
Secrets Manager, SQS and DynamoDB; msal for tokens; requests for Graph and
the flow's target), reading and writing the same state the Rust functions
keep, under a minimal Lambda Runtime API loop so both run under the same
harness. `BASELINE_FUNCTION` picks the handler: `webhook`, `dispatch`,
`send-mail` or `oauth-callback` (the default, `webhook`, is also what the
ready-only benchmark starts).

Settings are the Rust functions' own (RELAY365_*); boto3 reads its endpoints
from AWS_ENDPOINT_URL_<SERVICE>, and a local test CA from AWS_CA_BUNDLE and
REQUESTS_CA_BUNDLE. Clients and secrets are kept for the container's life,
as a careful team would.
"""

import base64
import hashlib
import hmac
import json
import os
import time
import traceback
import urllib.parse
import urllib.request

import boto3
import msal
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
FUNCTION = os.environ.get("BASELINE_FUNCTION", "webhook")
ENV = os.environ.get
SECRETS = boto3.client("secretsmanager")
SQS = boto3.client("sqs")
DYNAMO = boto3.client("dynamodb")
HTTP = requests.Session()
GRAPH = ENV("RELAY365_GRAPH_URL", "https://graph.microsoft.com").rstrip("/") + "/v1.0"
LOGIN = ENV("RELAY365_LOGIN_URL", "https://login.microsoftonline.com").rstrip("/")
SCOPES = ["https://graph.microsoft.com/Mail.ReadWrite", "https://graph.microsoft.com/Mail.Send"]
_cache = {}


def secret(name):
    if name not in _cache:
        _cache[name] = SECRETS.get_secret_value(SecretId=name)["SecretString"]
    return _cache[name]


def app():
    """The msal application, built once (its first token call fetches the tenant's discovery document)."""
    if "app" not in _cache:
        creds = json.loads(secret(ENV("RELAY365_APP_SECRET_ID")))
        _cache["app"] = msal.ConfidentialClientApplication(
            creds["client_id"], client_credential=creds["client_secret"],
            authority=f"{LOGIN}/{creds['tenant_id']}", validate_authority=False, instance_discovery=False,
            http_client=HTTP)
    return _cache["app"]


def client_state(connection_id):
    """relay365's clientState: HKDF-SHA256 of the signing key, then HMAC-SHA256."""
    raw = secret(ENV("RELAY365_SIGNING_KEY_SECRET_ID"))
    root = (json.loads(raw)["current"] if raw.lstrip().startswith("{") else raw).encode()
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"relay365 signing key", info=b"client-state").derive(root)
    tag = hmac.new(key, b"client-state\n" + connection_id.encode(), hashlib.sha256).digest()
    return f"{connection_id}." + base64.urlsafe_b64encode(tag).rstrip(b"=").decode()


def connection(connection_id):
    items = DYNAMO.query(TableName=ENV("RELAY365_STATE_TABLE"), ConsistentRead=True,
                         KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": f"conn#{connection_id}"}})["Items"]
    conn = next(i for i in items if i["sk"]["S"] == "conn")
    subs = [i for i in items if i["sk"]["S"].startswith("sub#")]
    return conn, subs


def access_token(connection_id, conn):
    """A token for the scopes the connection was granted, from its stored refresh token."""
    stored = json.loads(secret(f"{ENV('RELAY365_SECRET_PREFIX', 'relay365/')}tokens/{connection_id}"))
    granted = [g["S"] for g in conn.get("granted_scopes", {}).get("L", [])]
    scopes = [g if g.startswith("https://") else f"https://graph.microsoft.com/{g}" for g in granted
              if g not in ("offline_access", "openid", "profile", "email")] or SCOPES
    result = app().acquire_token_by_refresh_token(stored["refresh_token"], scopes=scopes)
    if "access_token" not in result:
        raise RuntimeError(result.get("error_description", "no token"))
    return result["access_token"]


def webhook(event):
    qs = urllib.parse.parse_qs(event.get("rawQueryString", ""))
    if "validationToken" in qs:
        return {"statusCode": 200, "headers": {"content-type": "text/plain"}, "body": qs["validationToken"][0]}
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    entries = []
    for n in json.loads(body).get("value", []):
        conn_id = n.get("clientState", "").rsplit(".", 1)[0]
        if not hmac.compare_digest(n.get("clientState", ""), client_state(conn_id)):
            continue
        item = {"connection_id": conn_id, "subscription_id": n["subscriptionId"], "resource": n["resource"], "change_type": n["changeType"]}
        dedup = hashlib.sha256(json.dumps(item, sort_keys=True).encode()).hexdigest()
        entries.append({"Id": str(len(entries)), "MessageBody": json.dumps(item), "MessageGroupId": conn_id, "MessageDeduplicationId": dedup})
    if entries:
        SQS.send_message_batch(QueueUrl=ENV("RELAY365_QUEUE_URL"), Entries=entries)
    return {"statusCode": 202, "body": ""}


def dispatch(event):
    failures = []
    for record in event.get("Records", []):
        try:
            n = json.loads(record["body"])
            conn, subs = connection(n["connection_id"])
            target = next((s.get("target", {}).get("S") for s in subs if s.get("id", {}).get("S") == n["subscription_id"]), None)
            target = target or ENV("RELAY365_DEFAULT_TARGET")
            message_id = n["resource"].rsplit("/", 1)[-1]
            token = access_token(n["connection_id"], conn)
            r = HTTP.get(f"{GRAPH}/me/messages/{message_id}", headers={"Authorization": f"Bearer {token}"},
                         params={"$select": "id,subject,from,toRecipients,receivedDateTime,bodyPreview,internetMessageId"}, timeout=15)
            r.raise_for_status()
            m = r.json()
            payload = json.dumps({"type": "mail.received", "id": hashlib.sha256(f"{n['connection_id']}:{message_id}".encode()).hexdigest(),
                                  "connection_id": n["connection_id"], "mailbox": conn.get("mailbox", {}).get("S"),
                                  "message": {"id": m["id"], "subject": m.get("subject"), "from": m.get("from"),
                                              "received_at": m.get("receivedDateTime"), "preview": m.get("bodyPreview")}}).encode()
            ts = int(time.time())
            sig = hmac.new(secret(ENV("RELAY365_EVENT_SIGNING_SECRET_ID")).strip().encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
            t = HTTP.post(target, data=payload, headers={"content-type": "application/json", "Relay365-Signature": f"t={ts},v1={sig}"}, timeout=10)
            t.raise_for_status()
            DYNAMO.put_item(TableName=ENV("RELAY365_STATE_TABLE"), Item={
                "pk": {"S": f"conn#{n['connection_id']}"}, "sk": {"S": f"dlv#{message_id}"}, "delivered_at": {"N": str(ts)},
                "ttl": {"N": str(ts + 14 * 86400)}})
        except Exception:  # noqa: BLE001  (the record is retried by SQS)
            traceback.print_exc()
            failures.append({"itemIdentifier": record.get("messageId")})
    return {"batchItemFailures": failures}


def send_mail(event):
    conn, _ = connection(event["connection_id"])
    token = access_token(event["connection_id"], conn)
    body = event.get("body", {})
    message = {"subject": event.get("subject", ""),
               "body": {"contentType": "HTML" if "html" in body else "Text", "content": body.get("html", body.get("text", ""))},
               "toRecipients": [{"emailAddress": {"address": a}} for a in event.get("to", [])]}
    r = HTTP.post(f"{GRAPH}/me/sendMail", json={"message": message, "saveToSentItems": True},
                  headers={"Authorization": f"Bearer {token}"}, timeout=15)
    r.raise_for_status()
    return {"status": "sent", "connection_id": event["connection_id"], "mailbox": conn.get("mailbox", {}).get("S")}


def oauth_callback(event):
    qs = urllib.parse.parse_qs(event.get("rawQueryString", ""))
    connection_id = qs["state"][0]
    public = ENV("RELAY365_PUBLIC_URL").rstrip("/")
    result = app().acquire_token_by_authorization_code(qs["code"][0], scopes=SCOPES, redirect_uri=f"{public}/oauth/callback")
    if "access_token" not in result:
        return {"statusCode": 400, "headers": {"content-type": "text/html"}, "body": "<p>Sign-in failed.</p>"}
    headers = {"Authorization": f"Bearer {result['access_token']}"}
    me = HTTP.get(f"{GRAPH}/me", headers=headers, timeout=15).json()
    mailbox = me.get("mail") or me.get("userPrincipalName")
    SECRETS.create_secret(Name=f"{ENV('RELAY365_SECRET_PREFIX', 'relay365/')}tokens/{connection_id}",
                          SecretString=json.dumps({"refresh_token": result.get("refresh_token"), "generation": 1}))
    table, now = ENV("RELAY365_STATE_TABLE"), int(time.time())
    DYNAMO.put_item(TableName=table, Item={"pk": {"S": f"conn#{connection_id}"}, "sk": {"S": "conn"}, "id": {"S": connection_id},
                                          "mailbox": {"S": mailbox}, "status": {"S": "active"}, "updated_at": {"N": str(now)}})
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 4230 * 60 - 60))
    sub = HTTP.post(f"{GRAPH}/subscriptions", headers=headers, timeout=15, json={
        "changeType": "created", "notificationUrl": f"{public}/notifications", "lifecycleNotificationUrl": f"{public}/notifications/lifecycle",
        "resource": "me/mailFolders('inbox')/messages", "expirationDateTime": expires, "clientState": client_state(connection_id)})
    sub.raise_for_status()
    DYNAMO.put_item(TableName=table, Item={"pk": {"S": f"conn#{connection_id}"}, "sk": {"S": "sub#mail"}, "id": {"S": sub.json()["id"]},
                                          "resource": {"S": "mail"}, "expires_at": {"S": expires}})
    return {"statusCode": 200, "headers": {"content-type": "text/html"}, "body": f"<p>{mailbox} is connected.</p>"}


HANDLERS = {"webhook": webhook, "dispatch": dispatch, "send-mail": send_mail, "oauth-callback": oauth_callback}
handler = HANDLERS[FUNCTION]

while True:
    with urllib.request.urlopen(f"http://{API}/2018-06-01/runtime/invocation/next") as r:
        request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read())
    try:
        body, kind = json.dumps(handler(event)).encode(), "response"
    except Exception as e:  # noqa: BLE001  (reported as Lambda reports an unhandled error)
        body, kind = json.dumps({"errorType": type(e).__name__, "errorMessage": str(e)}).encode(), "error"
    urllib.request.urlopen(urllib.request.Request(f"http://{API}/2018-06-01/runtime/invocation/{request_id}/{kind}", data=body, method="POST"))
