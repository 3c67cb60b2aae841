#!/usr/bin/env python3
"""Reads the Swift Testing event stream of a `make test` run and prints the summary.

    scripts/test-report.py EVENTS.jsonl --status N --seconds S --summary SUMMARY.tsv
        Counts the test functions (each parameterised case counts once with its function) by test
        target: passed, failed, skipped. Adds one line per target and a total to SUMMARY.tsv (group,
        tests, passed, failed, seconds, note). Prints every failing test with its first messages, and
        when the run was stopped by its time limit (status 124) or crashed, the tests that were
        still running. Exits 1 when anything failed, was skipped, or never finished.

    scripts/test-report.py --print-summary SUMMARY.tsv --total-seconds S
        Prints the summary table of the whole run.

The event stream is the JSON Lines format of `--event-stream-output-path` (version 0,
swiftlang/swift-testing Documentation/ABI/JSON.md).
"""
import argparse
import collections
import json
import sys


def load(path):
    tests, events = {}, []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut short when the process was killed
                if record.get("kind") == "test":
                    tests[record["payload"]["id"]] = record["payload"]
                elif record.get("kind") == "event":
                    events.append(record["payload"])
    except FileNotFoundError:
        pass
    return tests, events


def module_of(test_id):
    return test_id.split(".", 1)[0].split("/", 1)[0]


def report(args):
    tests, events = load(args.events)
    functions = {i: t for i, t in tests.items() if t.get("kind") == "function"}
    started, ended, skipped, issues, times = set(), set(), {}, collections.defaultdict(list), {}
    run_ended = False
    for e in events:
        kind, tid = e.get("kind"), e.get("testID")
        when = (e.get("instant") or {}).get("absolute")
        if kind == "runEnded":
            run_ended = True
        if tid is None:
            continue
        if kind == "testStarted":
            started.add(tid)
            times.setdefault(tid, [when, None])
        elif kind == "testEnded":
            ended.add(tid)
            times.setdefault(tid, [when, None])[1] = when
        elif kind == "testSkipped":
            skipped[tid] = " ".join(m.get("text", "") for m in e.get("messages", []))
        elif kind == "issueRecorded":
            issue = e.get("issue") or {}
            if issue.get("isKnown") or issue.get("isFailure") is False:
                continue
            issues[tid].append(" ".join(m.get("text", "") for m in e.get("messages", [])))

    def suite_skip(fid):
        # A skipped suite skips its functions without an event of their own.
        for sid, why in skipped.items():
            if fid == sid or fid.startswith(sid + "/") or fid.startswith(sid + "."):
                return why
        return None

    per_module = collections.OrderedDict()
    failed_tests, skipped_tests, running = [], [], []
    for fid in sorted(functions):
        m = module_of(fid)
        row = per_module.setdefault(m, {"tests": 0, "passed": 0, "failed": 0, "skipped": 0, "start": None, "end": None})
        row["tests"] += 1
        own = [msg for tid, msgs in issues.items() if tid == fid or tid.startswith(fid + "/") for msg in msgs]
        why_skipped = suite_skip(fid)
        if own:
            row["failed"] += 1
            failed_tests.append((fid, own))
        elif why_skipped is not None and fid not in started:
            row["skipped"] += 1
            skipped_tests.append((fid, why_skipped))
        elif fid in ended:
            row["passed"] += 1
        elif fid in started:
            row["failed"] += 1
            running.append(fid)
        else:
            row["failed"] += 1
            running.append(fid + " (never started)")
        start, end = times.get(fid, [None, None])
        if start is not None:
            row["start"] = start if row["start"] is None else min(row["start"], start)
        if end is not None:
            row["end"] = end if row["end"] is None else max(row["end"], end)

    # Issues recorded outside any test function (a suite's init, the runner itself).
    stray = [(tid, msgs) for tid, msgs in issues.items() if not any(tid == f or tid.startswith(f + "/") for f in functions)]

    lines = []
    total = {"tests": 0, "passed": 0, "failed": 0, "skipped": 0}
    for m, row in per_module.items():
        span = round(row["end"] - row["start"]) if row["start"] is not None and row["end"] is not None else 0
        note = []
        if row["skipped"]:
            note.append(f"{row['skipped']} skipped (a failure under make test)")
        lines.append(f"Swift: {m}\t{row['tests']}\t{row['passed']}\t{row['failed'] + row['skipped']}\t{span}\t{'; '.join(note)}")
        for k in total:
            total[k] += row[k]
    note = []
    if args.status == 124:
        note.append("TIME LIMIT")
    elif args.status not in (0, 1):
        note.append(f"test process ended with status {args.status}")
    if not run_ended:
        note.append("the run did not finish")
    if stray:
        note.append(f"{len(stray)} issue(s) outside a test")
    bad = total["failed"] + total["skipped"] + len(stray)
    if args.status != 0 and bad == 0:
        bad = 1  # the process failed although no test did: count that
        note.append(f"status {args.status} with no failing test")
    lines.append(f"Swift tests (total)\t{total['tests']}\t{total['passed']}\t{bad}\t{args.seconds}\t{'; '.join(note)}")
    with open(args.summary, "a", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")

    for fid, msgs in failed_tests:
        print(f"FAILED {fid}", file=sys.stderr)
        for msg in msgs[:3]:
            print(f"    {msg[:600]}", file=sys.stderr)
    for fid, why in skipped_tests:
        print(f"SKIPPED (not allowed under make test) {fid}: {why}", file=sys.stderr)
    for tid, msgs in stray:
        print(f"ISSUE outside a test function, {tid}: {msgs[0][:600] if msgs else ''}", file=sys.stderr)
    if running:
        why = "stopped by its time limit" if args.status == 124 else "ended"
        print(f"test: the Swift test run {why} while these were still running:", file=sys.stderr)
        for fid in running:
            print(f"    {fid}", file=sys.stderr)
    if not functions:
        print("test: the event stream holds no test at all", file=sys.stderr)
        return 1
    return 1 if bad or not run_ended else 0


def print_summary(args):
    rows = []
    with open(args.print_summary, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 5:
                rows.append(parts + [""] * (6 - len(parts)))
    width = max([len(r[0]) for r in rows] + [5])
    print()
    print("==> summary")
    print(f"{'group':<{width}}  {'tests':>6}  {'passed':>6}  {'failed':>6}  {'time':>8}  note")
    for group, tests, passed, failed, seconds, note in rows:
        t = f"{int(seconds) // 60}m{int(seconds) % 60:02d}s" if seconds.isdigit() else seconds
        print(f"{group:<{width}}  {tests:>6}  {passed:>6}  {failed:>6}  {t:>8}  {note}")
    total = int(args.total_seconds)
    print(f"{'whole run':<{width}}  {'':>6}  {'':>6}  {'':>6}  {total // 60}m{total % 60:02d}s")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("events", nargs="?")
    p.add_argument("--status", type=int, default=0)
    p.add_argument("--seconds", type=int, default=0)
    p.add_argument("--summary")
    p.add_argument("--print-summary")
    p.add_argument("--total-seconds", default="0")
    args = p.parse_args()
    if args.print_summary:
        sys.exit(print_summary(args))
    sys.exit(report(args))


if __name__ == "__main__":
    main()
