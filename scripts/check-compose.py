#!/usr/bin/env python3
"""Checks compose/ against the code and against `make up`:

1. `docker-compose config` accepts compose/docker-compose.yml (Debian's docker-compose; no engine needed);
2. every service built from our image runs one of our executables;
3. every MESH_* variable set in compose or in scripts/up.sh is read somewhere in Sources/ (no typos,
   no settings that nothing reads);
4. compose and `make up` run the same set of executables.
Exits non-zero with the reasons on failure.
"""
import pathlib
import re
import subprocess
import sys

import yaml

root = pathlib.Path(__file__).resolve().parent.parent
compose_file = root / "compose" / "docker-compose.yml"
executables = {"AllocatorSvc", "ProvisionSvc", "FanoutSvc", "NodeApplier", "Gateway", "meshctl"}
problems = []

out = subprocess.run(["docker-compose", "-f", str(compose_file), "config"], capture_output=True, text=True)
if out.returncode != 0:
    print("docker-compose config failed:\n" + out.stderr, file=sys.stderr)
    sys.exit(1)
config = yaml.safe_load(out.stdout)

sources = "\n".join(p.read_text(errors="replace") for p in (root / "Sources").rglob("*.swift"))
read_vars = set(re.findall(r'"(MESH_[A-Z0-9_]+)"', sources))
# Env.secret("X") also reads X_FILE.
read_vars |= {v + "_FILE" for v in read_vars}

compose_execs = set()
for name, svc in config["services"].items():
    if svc.get("image") != "quazzar-mesh:latest":
        continue
    command = " ".join(svc.get("command") or [])
    used = {e for e in executables if re.search(r"/usr/local/bin/" + e + r"\b", command)}
    if not used and "setup.sh" not in command:
        problems.append(f"{name}: runs none of our executables ({command})")
    compose_execs |= used
    for var in (svc.get("environment") or {}):
        if var.startswith("MESH_") and var not in read_vars:
            problems.append(f"{name}: {var} is set but nothing in Sources/ reads it")

up = (root / "scripts" / "up.sh").read_text()
for var in sorted(set(re.findall(r"\b(MESH_[A-Z0-9_]+)=", up))):
    if var.startswith("MESH_UP_") or var in ("MESH_UNUSED",):
        continue
    if var not in read_vars and var not in ("MESH_NATS_HOST", "MESH_NATS_PORT", "MESH_PG_PORT", "MESH_NATS_CONFIG"):
        problems.append(f"scripts/up.sh: {var} is set but nothing in Sources/ reads it")
up_execs = {e for e in executables if re.search(r"\b" + e + r"\b", up)} - {"meshctl"}
if compose_execs - {"meshctl"} != up_execs:
    problems.append(f"compose runs {sorted(compose_execs)}, make up runs {sorted(up_execs)}")

if problems:
    print("compose check failed:", file=sys.stderr)
    for p in problems:
        print("  - " + p, file=sys.stderr)
    sys.exit(1)
print(f"compose check: {len(config['services'])} services, executables {sorted(compose_execs)}, settings all read by the code")
