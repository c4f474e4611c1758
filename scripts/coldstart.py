"""Cold-start benchmark: each function's release binary, and a Python 3
baseline importing what a Python team would use (msal, boto3, requests),
against a local stub of the Lambda Runtime API.

Measures, as medians of RUNS cold starts: process start -> first
GET /runtime/invocation/next ("ready"), process start -> first response to a
representative event, peak RSS (VmHWM) after that response, and binary size.
Events are chosen so that no network is involved (secrets come from a local
file store), which isolates what the runtime itself costs.

Usage: python3 scripts/coldstart.py [--runs N] [--out FILE]  (after cargo build --release)
"""

import http.server
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUNS = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 7


def apigw(method, path, query=""):
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query,
        "headers": {"host": "relay.example", "content-type": "application/json"},
        "requestContext": {"accountId": "123456789012", "apiId": "abc", "domainName": "relay.example",
                           "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9", "userAgent": "bench"},
                           "requestId": "r", "routeKey": "$default", "stage": "$default", "time": "22/Nov/2026:19:03:58 +0000", "timeEpoch": 1795000000000},
        "isBase64Encoded": False,
    }


HANDSHAKE = apigw("POST", "/notifications", "validationToken=Validation%3A+Testing+client+application+reachability")
EVENTS = {
    "mail-webhook": HANDSHAKE,
    "oauth-callback": apigw("GET", "/oauth/start", "link=not-a-link"),
    "connections": apigw("GET", "/connections"),
    "send-mail": {"connection_id": "support", "to": ["not-an-address"], "body": {"text": "x"}},
    "mail-dispatch": {"Records": [{"messageId": "m1", "body": "not a notification", "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs"}]},
}


class Stub(http.server.BaseHTTPRequestHandler):
    """The Runtime API: one event, then /next blocks until the run ends."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        run = self.server.run
        if not run["first_next"]:
            run["first_next"] = time.perf_counter()
            body = json.dumps(run["event"]).encode()
            self.send_response(200)
            self.send_header("Lambda-Runtime-Aws-Request-Id", "req-1")
            self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
            self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:bench")
            self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            run["done"].wait(10)
            self.send_response(500)
            self.end_headers()

    def do_POST(self):
        run = self.server.run
        length = int(self.headers.get("Content-Length", 0))
        payload = self.rfile.read(length)
        if run["responded"] is None:
            run["responded"] = time.perf_counter()
            run["response"] = payload.decode(errors="replace")
            run["kind"] = self.path.rsplit("/", 1)[-1]
        self.send_response(202)
        self.end_headers()
        run["answered"].set()


def peak_rss_kb(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cold_start(cmd, env, event):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    server.run = {"event": event, "first_next": None, "responded": None, "response": None,
                  "answered": threading.Event(), "done": threading.Event(), "kind": None}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(env, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{server.server_address[1]}")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ok = server.run["answered"].wait(20)
    rss = peak_rss_kb(proc.pid)
    server.run["done"].set()
    proc.kill()
    proc.wait()
    server.shutdown()
    run = server.run
    if not ok or run["first_next"] is None:
        raise RuntimeError(f"{cmd[0]} gave no answer")
    return (run["first_next"] - start) * 1000, (run["responded"] - start) * 1000, rss / 1024, run["kind"], run["response"]


def main():
    store = pathlib.Path(tempfile.mkdtemp(prefix="relay365-bench-"))
    (store / "relay365%2Fapp").write_text(json.dumps({"client_id": "c", "tenant_id": "t", "client_secret": "s"}))
    (store / "relay365%2Fsigning-key").write_text("k" * 64)
    base = {
        "PATH": os.environ.get("PATH", ""), "AWS_LAMBDA_FUNCTION_NAME": "bench", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_LAMBDA_LOG_STREAM_NAME": "s", "AWS_LAMBDA_LOG_GROUP_NAME": "g",
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        "RELAY365_APP_SECRET_ID": "relay365/app", "RELAY365_SIGNING_KEY_SECRET_ID": "relay365/signing-key",
        "RELAY365_SECRET_STORE": f"file:{store}", "RELAY365_PUBLIC_URL": "https://relay.example",
        "RELAY365_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/q.fifo",
    }
    rows = []
    for name, event in EVENTS.items():
        binary = ROOT / "target" / "release" / name
        samples = [cold_start([str(binary)], base, event) for _ in range(RUNS)]
        rows.append((name, samples, binary.stat().st_size))
    python = ROOT / ".venv" / "bin" / "python"
    baseline = ROOT / "scripts" / "python_baseline.py"
    py = [cold_start([str(python), str(baseline)], base, HANDSHAKE) for _ in range(RUNS)]
    med = lambda xs, i: statistics.median(x[i] for x in xs)
    out = ["## Cold start (local Runtime API stub)", "",
           f"`python3 scripts/coldstart.py` (via `make bench`), x86-64 release binaries on this machine, medians of {RUNS} cold starts. "
           "\"Ready\" is process start to the first `GET /next`; \"first answer\" adds one representative event that needs no network "
           "(secrets from a local file store); RSS is the peak after that answer.", "",
           "| function | ready | first answer | peak RSS | binary | event |", "|---|---|---|---|---|---|"]
    for name, s, size in rows:
        out.append(f"| {name} | {med(s, 0):.1f} ms | {med(s, 1):.1f} ms | {med(s, 2):.1f} MB | {size / 1e6:.1f} MB | {s[0][3]} |")
    out.append(f"| Python 3 baseline (msal, boto3, requests; same handshake) | {med(py, 0):.1f} ms | {med(py, 1):.1f} ms | {med(py, 2):.1f} MB | n/a | {py[0][3]} |")
    webhook = next(s for n, s, _ in rows if n == "mail-webhook")
    out += ["", f"The webhook answers the validation handshake from a cold start in {med(webhook, 1):.1f} ms, "
            f"{med(py, 1) / med(webhook, 1):.0f} times faster than the Python baseline ({med(py, 1):.1f} ms), with no network call."]
    text = "\n".join(out) + "\n"
    target = pathlib.Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else None
    if target:
        target.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
