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
import io
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUNS = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 7
WARM = 100  # warm invocations after each cold start


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
    """The Runtime API: the cold event, then WARM more of the same, then /next blocks until the run ends."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, each answer
    # would wait for the client's delayed ACK (40 ms) and measure the kernel.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_GET(self):
        run = self.server.run
        if run["handed"] < 1 + run["warm"]:
            now = time.perf_counter()
            if run["first_next"] is None:
                run["first_next"] = now
            run["handed"] += 1
            run["sent_at"] = now
            body = json.dumps(run["event"]).encode()
            self.send_response(200)
            self.send_header("Lambda-Runtime-Aws-Request-Id", f"req-{run['handed']}")
            self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
            self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:bench")
            self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            run["done"].wait(10)
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def do_POST(self):
        run = self.server.run
        now = time.perf_counter()
        length = int(self.headers.get("Content-Length", 0))
        payload = self.rfile.read(length)
        if run["responded"] is None:
            run["responded"] = now
            run["response"] = payload.decode(errors="replace")
            run["kind"] = self.path.rsplit("/", 1)[-1]
        else:
            run["warm_ms"].append((now - run["sent_at"]) * 1000)
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()
        if run["handed"] >= 1 + run["warm"]:
            run["answered"].set()


def peak_rss_kb(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cold_start(cmd, env, event, warm=0):
    """One cold start, then `warm` invocations of the same event in the same process."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    server.run = {"event": event, "first_next": None, "responded": None, "response": None, "handed": 0, "warm": warm,
                  "warm_ms": [], "sent_at": None, "pid": None,
                  "answered": threading.Event(), "done": threading.Event(), "kind": None}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(env, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{server.server_address[1]}")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server.run["pid"] = proc.pid
    ok = server.run["answered"].wait(30)
    rss = peak_rss_kb(proc.pid)
    server.run["done"].set()
    proc.kill()
    proc.wait()
    server.shutdown()
    run = server.run
    if not ok or run["first_next"] is None:
        raise RuntimeError(f"{cmd[0]} gave no answer")
    warm_ms = statistics.median(run["warm_ms"]) if run["warm_ms"] else float("nan")
    return (run["first_next"] - start) * 1000, (run["responded"] - start) * 1000, rss / 1024, run["kind"], run["response"], warm_ms


def zip_size(path, arcname="bootstrap"):
    """Bytes of a deployment zip holding `path` as `arcname` (deflate, level 9)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.write(path, arcname)
    return len(buf.getvalue())


def python_package_zip_size():
    """Bytes of a zip of the baseline handler with the libraries it imports
    (msal, requests, boto3 and what they pull in), as a Python team would ship it."""
    site = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"))
    wanted = ["msal", "jwt", "cryptography", "cffi", "_cffi_backend", "pycparser", "requests", "urllib3", "idna", "certifi",
              "charset_normalizer", "boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.write(ROOT / "scripts" / "python_baseline.py", "handler.py")
        for entry in site.iterdir():
            stem = entry.name.split(".")[0]
            if stem in wanted or entry.name in ("six.py",):
                files = [entry] if entry.is_file() else [f for f in entry.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
                for f in files:
                    z.write(f, f.relative_to(site))
    return len(buf.getvalue())


def main():
    store = pathlib.Path(tempfile.mkdtemp(prefix="relay365-bench-"))
    (store / "relay365%2Fapp").write_text(json.dumps({"client_id": "c", "tenant_id": "t", "client_secret": "s"}))
    (store / "relay365%2Fsigning-key").write_text("k" * 64)
    (store / "relay365%2Fevent-signing-key").write_text("e" * 64)
    base = {
        "PATH": os.environ.get("PATH", ""), "AWS_LAMBDA_FUNCTION_NAME": "bench", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_LAMBDA_LOG_STREAM_NAME": "s", "AWS_LAMBDA_LOG_GROUP_NAME": "g",
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        "RELAY365_APP_SECRET_ID": "relay365/app", "RELAY365_SIGNING_KEY_SECRET_ID": "relay365/signing-key",
        "RELAY365_EVENT_SIGNING_SECRET_ID": "relay365/event-signing-key",
        "RELAY365_SECRET_STORE": f"file:{store}", "RELAY365_PUBLIC_URL": "https://relay.example",
        "RELAY365_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/q.fifo",
    }
    rows = []
    for name, event in EVENTS.items():
        binary = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / name
        samples = [cold_start([str(binary)], base, event, WARM) for _ in range(RUNS)]
        rows.append((name, samples, zip_size(binary)))
    python = ROOT / ".venv" / "bin" / "python"
    baseline = ROOT / "scripts" / "python_baseline.py"
    py = [cold_start([str(python), str(baseline)], base, HANDSHAKE, WARM) for _ in range(RUNS)]
    py_zip = python_package_zip_size()
    med = lambda xs, i: statistics.median(x[i] for x in xs)
    out = ["## Cold start, warm cost, memory and size (local Runtime API stub)", "",
           f"`make bench` runs `python3 scripts/coldstart.py`: x86-64 release binaries on this machine, medians of {RUNS} cold starts, "
           f"each followed by {WARM} warm invocations of the same event in the same process. "
           "\"Ready\" is process start to the first `GET /next`; \"first answer\" adds one representative event that needs no network "
           "(secrets from a local file store, state in the in-memory store: no RELAY365_STATE_TABLE is set); \"warm\" is the stub handing over an event to receiving its answer, per invocation "
           "(the Runtime API round trip included); peak RSS is the process's high-water mark after all of them; "
           "zip is the deployment package (`bootstrap`, deflate level 9).", "",
           "| function | ready | first answer | warm, per invocation | peak RSS | zip | event |", "|---|---|---|---|---|---|---|"]
    for name, s, size in rows:
        out.append(f"| {name} | {med(s, 0):.1f} ms | {med(s, 1):.1f} ms | {med(s, 5) * 1000:.0f} µs | {med(s, 2):.1f} MB | {size / 1e6:.2f} MB | {s[0][3]} |")
    out.append(f"| Python 3 baseline (msal, boto3, requests; the handshake) | {med(py, 0):.1f} ms | {med(py, 1):.1f} ms | "
               f"{med(py, 5) * 1000:.0f} µs | {med(py, 2):.1f} MB | {py_zip / 1e6:.2f} MB (with its libraries) | {py[0][3]} |")
    webhook = next(s for n, s, _ in rows if n == "mail-webhook")
    out += ["", "Targets: ready under 20 ms and at least 10 times faster than the Python baseline, peak RSS under 32 MB, zip under 6 MB.", ""]
    for name, s, size in rows:
        ready, ratio, rss = med(s, 0), med(py, 0) / med(s, 0), med(s, 2)
        misses = []
        if ready >= 20:
            misses.append(f"ready {ready - 20:.1f} ms over")
        if ratio < 10:
            misses.append(f"only {ratio:.1f} times the baseline")
        if rss >= 32:
            misses.append(f"RSS {rss - 32:.1f} MB over")
        if size >= 6e6:
            misses.append(f"zip {(size - 6e6) / 1e6:.2f} MB over")
        verdict = "all met" if not misses else "MISSED: " + "; ".join(misses)
        out.append(f"- {name}: ready {ready:.1f} ms ({ratio:.0f}× faster than Python's {med(py, 0):.0f} ms), {rss:.1f} MB, {size / 1e6:.2f} MB zip: {verdict}.")
    out += ["", f"The webhook answers the validation handshake from a cold start in {med(webhook, 1):.1f} ms, "
            f"{med(py, 1) / med(webhook, 1):.0f} times faster than the Python baseline ({med(py, 1):.1f} ms), with no network call; "
            f"warm, it answers in {med(webhook, 5) * 1000:.0f} µs against Python's {med(py, 5) * 1000:.0f} µs."]
    text = "\n".join(out) + "\n"
    target = pathlib.Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else None
    if target:
        target.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
