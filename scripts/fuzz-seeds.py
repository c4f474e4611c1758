#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target from tests/fixtures.

Each target reads its input in its own framing (see fuzz/fuzz_targets/*.rs:
a leading byte that picks a route or a mode, then the payload); the seeds
follow it, so the fuzzer starts from the payloads Microsoft, API Gateway and
Amazon Connect really send.
"""
import json
import pathlib
import subprocess
import sys
import tempfile

root = pathlib.Path(__file__).resolve().parent.parent
fx = root / "tests" / "fixtures"
out = pathlib.Path(sys.argv[1])


def read(p):
    return (fx / p).read_bytes()


def put(target, name, data):
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


graph = ["notification-created.json", "notification-batch.json", "notification-rich.json"]
lifecycle = ["lifecycle-missed.json", "lifecycle-reauthorizationRequired.json", "lifecycle-subscriptionRemoved.json"]
for f in graph:
    put("webhook_notifications", f, b"\x00" + read("graph/" + f).replace(b"CLIENT_STATE", b"$CS"))
for f in lifecycle:
    put("webhook_notifications", f, b"\x01" + read("graph/" + f).replace(b"CLIENT_STATE", b"$CS"))

for f in ["apigw-v2-notification-handshake.json", "apigw-v2-iam-post-connections.json"]:
    put("webhook_event", f, read("aws/" + f))
    put("send_mail_event", f, b"\x01" + read("aws/" + f))
handshake = json.loads(read("aws/apigw-v2-notification-handshake.json"))
handshake["rawQueryString"] = ""
handshake.pop("queryStringParameters")
handshake["body"] = read("graph/notification-batch.json").decode()
put("webhook_event", "notification-post.json", json.dumps(handshake).encode())

send = [
    {"connection_id": "support", "to": ["ann@example.com"], "subject": "Case 4411", "body": {"text": "Hello"}},
    {"connection_id": "support", "from": "help@contoso.com", "to": ["Ann <ann@example.com>"], "cc": ["bo@example.com"],
     "reply_to": ["desk@contoso.com"], "subject": "Invoice", "body": {"html": "<p>Hi</p>"}, "importance": "high",
     "save_to_sent_items": False, "idempotency_key": "k-1",
     "attachments": [{"name": "a.txt", "content_type": "text/plain", "content_base64": "aGVsbG8="},
                     {"name": "big.pdf", "s3_key": "uploads/big.pdf"}]},
    {"connection_id": "support", "reply_to_message_id": "AAMkAGUwNjQ4ZjIxAAA=", "body": {"text": "Thanks"}},
]
for i, r in enumerate(send):
    b = json.dumps(r).encode()
    for flags in (0, 3):
        put("send_mail_request", f"req-{i}-{flags}", bytes([flags]) + b)
    put("send_mail_event", f"http-{i}", b"\x00" + b)
    put("send_mail_event", f"direct-{i}", b"\x01" + b)
connect = json.loads(read("connect/contact-flow-event.json"))
put("send_mail_event", "connect.json", b"\x01" + json.dumps(connect).encode())
put("connect_parameters", "connect.json", json.dumps(connect["Details"]["Parameters"]).encode())
put("connect_parameters", "connect-html.json", json.dumps({
    "connection_id": "support", "to": "ann@example.com", "cc": "bo@example.com", "subject": "Hi",
    "body_html": "<b>x</b>", "importance": "low", "from": "desk@contoso.com"}).encode())


def put_lines(target, prefix, cases):
    """Seeds in the framing of the HTTP targets: a selector byte (a route, a
    method), then two texts split at the first newline (a query and a cookie,
    a path and a body)."""
    for i, (selector, first, second) in enumerate(cases):
        put(target, f"{prefix}-{i}", bytes([selector]) + f"{first}\n{second}".encode())


# oauth_callback: the route, the query, the cookie.
put_lines("oauth_callback", "page", [
    (0, "link=eyJhbGciOi.x.y&prompt=login&domain_hint=contoso.com", ""),
    (1, "code=0.AAAA&state=abc.def&session_state=x", "relay365_oauth=abc.def"),
    (1, "error=access_denied&error_description=AADSTS65004%3a+User+declined+to+consent.&state=abc.def", "relay365_oauth=x"),
    (2, "admin_consent=True&tenant=contoso.onmicrosoft.com&state=abc.def", ""),
    (2, "error=consent_required&error_description=AADSTS65001%3a+x&state=abc", ""),
])

# connections_event: the method, the path, the body.
put_lines("connections_event", "route", [
    (1, "/connections", '{"mailbox":"support@contoso.com","auth":"delegated","scopes":["Mail.Read","Mail.Send"],"subscriptions":[{"resource":"mail","folder":"inbox"}],"target":"https://flows.example.com/in"}'),
    (1, "/connections", '{"mailbox":"support@contoso.com","auth":"app_secret","scopes":["Mail.Read"]}'),
    (0, "/connections", ""),
    (0, "/connections/c1", ""),
    (1, "/connections/c1/subscriptions", '{"resource":"calendar","target":"https://flows.example.com/cal"}'),
    (1, "/connections/c1/resubscribe", ""),
    (2, "/connections/c1", ""),
])

for i, v in enumerate(["2", "2.128", "0", "Wed, 21 Oct 2026 07:28:00 GMT", "Sun, 06 Nov 1994 08:49:37 GMT", " 30 "]):
    put("retry_after", f"v-{i}", v.encode())

for i, (s, body) in enumerate([
    (3, b'{"error":{"code":"ErrorAccessDenied","message":"Access is denied.","innerError":{"request-id":"8c1e","date":"2026-12-01T10:00:00"}}}'),
    (29, b'{"error":{"code":"TooManyRequests","message":"Please retry again later."}}'),
    (4, b'{"error":{"code":"ErrorItemNotFound","message":"The specified object was not found in the store."}}'),
    (103, b"<html>Service Unavailable</html>"),
]):
    put("graph_error", f"e-{i}", bytes([s]) + body)

# body_prefix: two bytes of limit (little endian), one byte of split point, then the answer.
for i, (limit, body) in enumerate([
    (64, b'{"@odata.etag":"W/\\"CQ\\"","id":"AAMk","body":{"contentType":"html","content":"<p>caf\\u00e9 \\"quoted\\" \\ud83d\\ude00</p>"}}'),
    (8, b'{"body":{"content":"\\u00e9\\u00e9\\u00e9\\u00e9","contentType":"text"}}'),
    (4096, b'{"id":"x","body":{"contentType":"html","content":"' + "é€😀".encode() * 40 + b'"}}'),
]):
    put("body_prefix", f"b-{i}", limit.to_bytes(2, "little") + bytes([128]) + body)

put("token_answer", "refresh", b"\x00" + read("identity/token-refresh.json"))
put("token_answer", "refresh-app", b"\x01" + read("identity/token-refresh.json"))
for f in ["error-expired-secret-7000222.json", "error-invalid-client-7000215.json", "error-invalid-grant-50173.json"]:
    put("token_answer", f, b"\x80" + read("identity/" + f))
    put("token_answer", f + "-app", b"\x81" + read("identity/" + f))

# Sign-in binding: ID tokens, app-only tokens with roles, discovery documents
# (the shapes Microsoft's ID token claims reference and a domain's discovery
# document have).
def jwt(claims):
    import base64
    b = lambda x: base64.urlsafe_b64encode(x).rstrip(b"=")
    return b(b'{"typ":"JWT","alg":"RS256","kid":"k"}') + b"." + b(json.dumps(claims).encode()) + b".c2ln"


TID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
id_claims = {"aud": "6731de76-14a6-49ae-97bc-6eba6914391e", "iss": f"https://login.microsoftonline.com/{TID}/v2.0",
             "iat": 1536275124, "nbf": 1536275124, "exp": 1536279024, "name": "Abe Lincoln",
             "oid": "00000000-0000-0000-66f3-3332eca7ea81", "preferred_username": "AbeLi@microsoft.com",
             "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ", "tid": TID, "ver": "2.0"}
put("id_token_claims", "v2", jwt(id_claims))
put("id_token_claims", "other-issuer", jwt(dict(id_claims, iss="https://sts.windows.net/" + TID + "/")))
put("id_token_claims", "no-oid", jwt({k: v for k, v in id_claims.items() if k != "oid"}))
app = {"aud": "https://graph.microsoft.com", "iss": f"https://sts.windows.net/{TID}/", "tid": TID, "idtyp": "app",
       "appid": "11111111-2222-3333-4444-555555555555"}
put("token_roles", "roles", jwt(dict(app, roles=["Mail.Read", "Mail.ReadWrite", "Mail.Send", "Calendars.Read"])))
put("token_roles", "no-roles", jwt(app))
put("token_roles", "one-role", jwt(dict(app, roles=["Mail.Send"])))
for name, tenant in [("domain", TID), ("common", "{tenantid}")]:
    put("discovery_tenant", name, json.dumps({
        "token_endpoint": f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
        "issuer": f"https://login.microsoftonline.com/{tenant}/v2.0",
        "authorization_endpoint": f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize",
        "cloud_instance_name": "microsoftonline.com", "msgraph_host": "graph.microsoft.com"}).encode())
put("discovery_tenant", "aadsts90002", json.dumps({"error": "invalid_tenant", "error_description":
    "AADSTS90002: Tenant 'nobody.example' not found.", "error_codes": [90002]}).encode())

# A PFX made here (a throw-away key, one PBKDF2 iteration so the fuzzer
# spends its time in the parser, not in key derivation).
with tempfile.TemporaryDirectory() as t:
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=relay365-fuzz",
                        "-keyout", f"{t}/k.pem", "-out", f"{t}/c.pem"], check=True, capture_output=True)
        for pw in ("", "fuzz"):
            subprocess.run(["openssl", "pkcs12", "-export", "-inkey", f"{t}/k.pem", "-in", f"{t}/c.pem", "-passout", f"pass:{pw}",
                            "-iter", "1", "-maciter", "-out", f"{t}/a.pfx"], check=True, capture_output=True)
            put("pfx", f"pfx-{len(pw)}", bytes([len(pw)]) + pw.encode() + pathlib.Path(f"{t}/a.pfx").read_bytes())
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"no PFX seed (openssl: {e}); the pfx target starts from nothing", file=sys.stderr)
        put("pfx", "empty", b"\x00")

# Caller ARN matching: pattern NUL caller, as send-mail sees them.
callers = [
    ("arn:aws:iam::123456789012:role/billing", "arn:aws:sts::123456789012:assumed-role/billing/run-42"),
    ("arn:aws:iam::123456789012:role/team/billing", "arn:aws:sts::123456789012:assumed-role/billing/s"),
    ("arn:aws:iam::123456789012:role/billing-*", "arn:aws:sts::123456789012:assumed-role/billing-eu/s"),
    ("arn:aws:iam::123456789012:user/ops-*", "arn:aws:iam::123456789012:user/ops-ann"),
    ("arn:aws:sts::123456789012:assumed-role/billing/*", "arn:aws:sts::999999999999:assumed-role/billing/s"),
    ("arn:aws:connect:us-east-1:123456789012:instance/9308c2a1-9bc6-4cea-8290-6c0b4a6d38fa",
     "arn:aws:connect:us-east-1:123456789012:instance/9308c2a1-9bc6-4cea-8290-6c0b4a6d38fa"),
    ("arn:aws:iam::*:role/x", "arn:aws:iam::123456789012:role/x"),
    ("a*b*c*d*e*", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
]
for i, (p, c) in enumerate(callers):
    put("caller_arn", f"pair-{i}", p.encode() + b"\0" + c.encode())
