#!/usr/bin/env python3
"""Checks the code size rule: no source file in shared/src or
functions/*/src over 700 lines, and no production function (outside
tests) over 120 lines in shared/src, functions/*/src, cli/src, demo/src
and sandbox/ (the simulator, the AWS kit and the Connect fake).

Functions are found by matching braces after `fn` items, with strings,
chars and comments blanked first; it is a good approximation, not a
parser. A lookup table (a function that is one big match or array of
data) may stay long: list such functions in EXEMPT. Unit tests in
`#[cfg(test)]` modules, `#[test]` functions and `tests.rs` files are not
counted as production functions.

Usage: python3 scripts/size_rule.py   (from the repository root; exit 1 when
something is over).
"""
import os
import re
import sys

FILE_MAX = int(os.environ.get("FILE_MAX", "700"))
FN_MAX = int(os.environ.get("FN_MAX", "120"))
FILE_ROOTS = ["shared/src", "functions"]
FN_ROOTS = ["shared/src", "functions", "cli/src", "demo/src", "sandbox"]
# Lookup tables: one match of data, long by nature.
EXEMPT = {("shared/src/microsoft/aadsts.rs", "explain")}

FN_RE = re.compile(
    r'^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?(?:extern\s+"[^"]*"\s+)?fn\s+(\w+)'
)
TEST_ATTR = re.compile(r'\s*#\[(cfg\(test\)|(tokio::)?test\b)')


def blank(line, state):
    """The line without strings, chars and comments (state carries block
    comments and multi-line strings from line to line)."""
    out, i, n = [], 0, len(line)
    while i < n:
        if state["block"]:
            j = line.find("*/", i)
            if j < 0:
                return "".join(out)
            state["block"], i = False, j + 2
            continue
        if state["str"]:
            term = state["str"]
            if term == '"':
                if line[i] == "\\":
                    i += 2
                    continue
                if line[i] == '"':
                    state["str"] = None
                i += 1
                continue
            j = line.find(term, i)
            if j < 0:
                return "".join(out)
            state["str"], i = None, j + len(term)
            continue
        if line.startswith("//", i):
            break
        if line.startswith("/*", i):
            state["block"], i = True, i + 2
            continue
        m = re.match(r'b?r(#*)"', line[i:])
        if m and (i == 0 or not (line[i - 1].isalnum() or line[i - 1] == "_")):
            state["str"], i = '"' + m.group(1), i + len(m.group(0))
            continue
        if line[i] == '"':
            state["str"], i = '"', i + 1
            continue
        if line[i] == "'":
            m = re.match(r"'(\\.[^']*|[^'\\])'", line[i:])
            if m:
                i += len(m.group(0))
                continue
        out.append(line[i])
        i += 1
    return "".join(out)


def long_fns(path):
    """(length, line, name) of each production fn over FN_MAX lines."""
    lines = open(path, encoding="utf-8").read().split("\n")
    state = {"block": False, "str": None}
    found, stack = [], []
    pending_test, pending = False, None
    parens = 0
    for idx, raw in enumerate(lines):
        code = blank(raw, state)
        if TEST_ATTR.match(raw):
            pending_test = True
        m = FN_RE.match(code)
        if m:
            pending, pending_test = (m.group(1), idx, pending_test), False
        elif re.match(r"\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", code):
            pending, pending_test = ("mod", idx, pending_test), False
        for ch in code:
            if ch in "([":
                parens += 1
            elif ch in ")]":
                parens -= 1
            elif ch == "{":
                if pending is None and pending_test:
                    # An impl, struct or trait under a test attribute: all
                    # inside it is test code.
                    pending = ("block", idx, True)
                stack.append(pending)
                pending, pending_test = None, False
            elif ch == "}" and stack:
                top = stack.pop()
                if top is None or top[0] in ("mod", "block"):
                    continue
                in_test = top[2] or any(s is not None and s[2] for s in stack)
                length = idx - top[1] + 1
                if not in_test and length > FN_MAX:
                    found.append((length, top[1] + 1, top[0]))
            elif ch == ";" and parens == 0:
                # A fn without a body (a trait's), or an item that ends here
                # (`#[cfg(test)] use …;`, `mod tests;`): a test attribute
                # before it does not reach the next fn.
                pending, pending_test = None, False
    return found


def self_test():
    """The two cases the brace matching must get right: a test attribute on
    an item without a body stops there, and one on an impl covers all of
    its fns."""
    import tempfile

    body = "\n".join(["    let _ = 1;"] * (FN_MAX + 5))
    cases = {
        f"#[cfg(test)]\nuse std::fmt;\n\npub fn big() {{\n{body}\n}}\n": ["big"],
        f"#[cfg(test)]\nimpl Foo {{\n    fn a() {{}}\n    fn b() {{\n{body}\n    }}\n}}\n": [],
    }
    for text, want in cases.items():
        with tempfile.NamedTemporaryFile("w", suffix=".rs", delete=False) as f:
            f.write(text)
        got = [name for _, _, name in long_fns(f.name)]
        os.unlink(f.name)
        assert got == want, f"size_rule.py miscounts: {got} instead of {want} on\n{text[:60]}"


def rust_files(roots):
    for root in roots:
        for dirpath, _, files in os.walk(root):
            if "/src" not in dirpath + "/" and not dirpath.endswith("src"):
                continue
            for f in files:
                if f.endswith(".rs"):
                    yield os.path.join(dirpath, f)


def main():
    self_test()
    over = False
    for path in sorted(rust_files(FILE_ROOTS)):
        n = sum(1 for _ in open(path, encoding="utf-8"))
        if n > FILE_MAX:
            over = True
            print(f"file {path}: {n} lines (max {FILE_MAX})")
    for path in sorted(rust_files(FN_ROOTS)):
        if os.path.basename(path) == "tests.rs":
            continue
        for length, line, name in long_fns(path):
            exempt = (path, name) in EXEMPT
            over |= not exempt
            note = " (lookup table, exempt)" if exempt else ""
            print(f"fn {path}:{line} {name}: {length} lines (max {FN_MAX}){note}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
