#!/usr/bin/env python3
"""Checks the test sources for what `make test` relies on (run by scripts/test.sh):

  - every Swift Testing suite has a time limit (`.timeLimit`), and no test function lives outside
    a suite (it would have none), so that a hang fails its test instead of stalling the run;
  - no expectation asserts on elapsed time (`#expect(... ContinuousClock ...)`, `#expect(... now - ...)`),
    and the browser test asserts none either: tests check what happens, benchmarks measure speed;
  - every test uses Swift Testing (scripts/test.sh runs the Swift Testing side of the test binary
    only, so an XCTest case would never run);
  - no suite is switched off (`.disabled`), and no gate is a bare `.enabled(if: ...)` on a tool or
    root check that `make test` could not turn into a failure (gates go through
    `TestEnvironment.runs(...)`, `hasInfra`, or the VM's kernel requirement), and no test returns
    early, unnoticed, when it is not root or a tool is missing (`guard getuid() == 0 else { return }`).

Prints each problem with its file and line; exits 1 if there is any.
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parents[1]
problems = []
suites = 0

for path in sorted((root / "Tests").rglob("*.swift")):
    rel = path.relative_to(root)
    lines = path.read_text(encoding="utf-8").splitlines()
    text = "\n".join(lines)
    for m in re.finditer(r"@Suite\b(\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\))?", text):
        suites += 1
        line = text.count("\n", 0, m.start()) + 1
        if ".timeLimit(" not in (m.group(1) or ""):
            problems.append(f"{rel}:{line}: a suite without .timeLimit")
        if ".disabled" in (m.group(1) or ""):
            problems.append(f"{rel}:{line}: a disabled suite")
        gate = m.group(1) or ""
        for g in re.finditer(r"\.enabled\(if:\s*([^,)]+)", gate):
            cond = g.group(1)
            if (not any(ok in cond for ok in ("TestEnvironment.runs", "TestEnvironment.hasInfra", "userspaceRuns", "toolsRun"))
                    or any(bad in cond for bad in ("isRoot", "hasExecutable", "userspaceReady"))):
                problems.append(f"{rel}:{line}: a gate make test cannot turn into a failure: .enabled(if: {cond.strip()})")
    for n, l in enumerate(lines, 1):
        if re.match(r"\s*(@testable\s+)?import\s+XCTest\b", l):
            problems.append(f"{rel}:{n}: XCTest (make test runs Swift Testing only)")
        if l.startswith("@Test"):
            problems.append(f"{rel}:{n}: a test function outside a suite (no time limit)")
        if re.search(r"@Test\(.*\.disabled", l):
            problems.append(f"{rel}:{n}: a disabled test")
        if re.search(r"#(expect|require)\(.*(ContinuousClock|\bnow\s*-|\.now\(\)\s*-|elapsed|[<>]=?\s*\.(seconds|milliseconds)\()", l):
            problems.append(f"{rel}:{n}: an expectation on elapsed time: {l.strip()}")
        if re.search(r"guard\b.*(getuid\(\)|isRoot|hasExecutable|fileExists).*else\s*\{\s*return\s*\}", l):
            problems.append(f"{rel}:{n}: a test that returns early, silently, when something is missing: {l.strip()}")
        m = re.search(r"@Test\((.*)\)", l)
        if m and ".enabled(if:" in m.group(1) and not re.search(r"TestEnvironment\.runs|toolsRun|userspaceRuns|hasInfra", m.group(1)):
            problems.append(f"{rel}:{n}: a test gate make test cannot turn into a failure: {l.strip()}")

for path in sorted((root / "Tests").rglob("*.py")):
    rel = path.relative_to(root)
    for n, l in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if re.search(r"self\.r\.(check|require)\(.*(delay|seconds|elapsed|monotonic)\s*[<>]=?", l):
            problems.append(f"{rel}:{n}: a check on elapsed time: {l.strip()}")

if suites == 0:
    problems.append("no suite found under Tests/")
for p in problems:
    print(f"check-tests: {p}", file=sys.stderr)
print(f"check-tests: {suites} suites checked, {len(problems)} problem(s)")
print(f"test hygiene: {1 if not problems else 0} passed, {1 if problems else 0} failed")
sys.exit(1 if problems else 0)
