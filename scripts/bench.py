"""Runs the criterion benchmarks and writes BENCHMARKS.md from their results
(median of criterion's samples), with the command and the machine.

`--section FILE` only puts FILE's section (e.g. BENCHMARKS.fleet.md, which
`make bench-fleet` writes) into BENCHMARKS.md in place of its earlier
version, leaving every other section as it is."""

import json
import pathlib
import platform
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCHES = [("mail-webhook", "webhook"), ("mail-dispatch", "normalise"), ("send-mail", "build_request")]


def run(cmd):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def median_ns(path):
    est = json.loads(path.read_text())
    return est["median"]["point_estimate"]


def human(ns):
    return f"{ns / 1000:.1f} µs" if ns >= 1000 else f"{ns:.0f} ns"


def splice(section_file):
    """Replaces FILE's section in BENCHMARKS.md (from its first heading to the
    next heading of the same level), or appends it."""
    section = (ROOT / section_file).read_text().strip()
    heading = section.splitlines()[0]
    level = heading.split(" ", 1)[0] + " "
    out = ROOT / "BENCHMARKS.md"
    lines = out.read_text().rstrip("\n").split("\n") if out.exists() else ["# Benchmarks"]
    title = heading.split(":", 1)[0]
    start = next((i for i, l in enumerate(lines) if l.split(":", 1)[0] == title and l.startswith(level)), None)
    if start is None:
        lines += ["", section]
    else:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith(level)), len(lines))
        lines[start:end] = section.split("\n") + ([""] if end < len(lines) else [])
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {section_file}'s section into BENCHMARKS.md")


def main():
    if "--section" in sys.argv:
        splice(sys.argv[sys.argv.index("--section") + 1])
        return
    if "--no-run" not in sys.argv:
        for pkg, bench in BENCHES:
            run(["cargo", "bench", "-p", pkg, "--bench", bench, "--", "--warm-up-time", "1", "--measurement-time", "3"])
    rows = []
    for est in sorted((ROOT / "target" / "criterion").glob("**/new/estimates.json")):
        bench = json.loads((est.parent / "benchmark.json").read_text())
        rows.append((bench["full_id"], median_ns(est)))
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# Benchmarks",
        "",
        "Measured by `make bench` (criterion, medians; `scripts/bench.py` writes this file).",
        f"Machine: {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores; {rustc}; "
        "bench profile = release with thin LTO.",
        "",
        "## Per-request cost of our code",
        "",
        "| benchmark | median |",
        "|---|---|",
    ]
    for name, ns in rows:
        lines.append(f"| {name} | {human(ns)} |")
        if "100-notification" in name:
            lines.append(f"| … per notification (÷100) | {human(ns / 100)} |")
    for extra in (ROOT / "BENCHMARKS.coldstart.md", ROOT / "BENCHMARKS.coldpath.md", ROOT / "BENCHMARKS.extra.md", ROOT / "BENCHMARKS.fleet.md"):
        if extra.exists():
            lines += ["", extra.read_text().strip()]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(lines) + "\n")
    print("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main()
