"""The Python baseline of the cold-start benchmark: what a Python team would
write for the webhook, importing the libraries it would use for the whole job
(msal for tokens, boto3 for Secrets Manager and SQS, requests for Graph), with
a minimal Lambda Runtime API loop so both run under the same stub."""

import json
import os
import urllib.parse
import urllib.request

import boto3  # noqa: F401  (imported at cold start, as a real function would)
import msal  # noqa: F401
import requests  # noqa: F401

SECRETS = boto3.client("secretsmanager")
SQS = boto3.client("sqs")
API = os.environ["AWS_LAMBDA_RUNTIME_API"]


def handler(event):
    qs = urllib.parse.parse_qs(event.get("rawQueryString", ""))
    if "validationToken" in qs:
        return {"statusCode": 200, "headers": {"content-type": "text/plain"}, "body": qs["validationToken"][0]}
    return {"statusCode": 202, "body": ""}


while True:
    with urllib.request.urlopen(f"http://{API}/2018-06-01/runtime/invocation/next") as r:
        request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read())
    body = json.dumps(handler(event)).encode()
    urllib.request.urlopen(urllib.request.Request(f"http://{API}/2018-06-01/runtime/invocation/{request_id}/response", data=body, method="POST"))
