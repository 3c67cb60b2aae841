#!/usr/bin/env bash
# `make test`: installs what is missing, builds, starts the real servers, and runs every test:
#   1. the Swift test suites (unit tests and integration tests against real nats-server, PostgreSQL,
#      the service executables, and wireguard-go in network namespaces);
#   2. the kernel-WireGuard tests in a qemu VM (scripts/vm-test.sh), which this kernel cannot run
#      (started before the Swift tests and run beside them; reported after them);
#   3. the checks that live outside Swift (scripts/test-extra.sh: the compose check, the browser test).
# Exits non-zero if anything fails, is skipped, or runs past its time limit. Ends with a summary:
# each group, its tests, passed, failed, and its time. Logs and artifacts go to .test-output/.
#
# Time limits (seconds): the whole run MESH_TEST_TIMEOUT (default 3600); each stage its own below
# (MESH_TEST_{DEPS,BUILD,SWIFT,VM,EXTRA}_TIMEOUT),
# never more than what is left of the whole. When a limit fires, the stage is killed (its whole
# process group) and the summary says which stage, and which Swift tests, were still running.
# Every suite also has a Swift Testing .timeLimit, and every wait in a test a deadline.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out="$root/.test-output"
mkdir -p "$out"
started=$(date +%s)
limit=${MESH_TEST_TIMEOUT:-3600}
summary="$out/summary.tsv"   # group \t tests \t passed \t failed \t seconds \t note
: > "$summary"
export MESH_TEST_SUMMARY="$summary"

step() { printf '\n==> %s\n' "$*"; }
elapsed() { echo $(( $(date +%s) - started )); }

# record GROUP TESTS PASSED FAILED SECONDS [NOTE]
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "${6:-}" >> "$summary"; }

# run_stage NAME LIMIT COMMAND...: runs COMMAND in a process group of its own under a time limit
# (the smaller of LIMIT and what is left of the whole run). Returns the command's status; 124 when
# the limit fired (then everything the stage started is killed).
stage_status=0
current_group=
# Interrupted (Ctrl-C, SIGTERM): the stage running in the background goes too.
# Every stage's process group is listed in $out/stage-groups (the VM stage runs beside the Swift tests).
: > "$out/stage-groups"
trap 'echo "test: interrupted" >&2; for g in $(cat "$out/stage-groups" 2>/dev/null); do kill -TERM -- "-$g" 2>/dev/null; done; exit 130' INT TERM
run_stage() {
  local name=$1 stage_limit=$2; shift 2
  local left=$(( limit - $(elapsed) ))
  [ "$left" -lt "$stage_limit" ] && stage_limit=$left
  if [ "$stage_limit" -le 0 ]; then
    echo "test: TIME LIMIT: no time left for stage '$name' (MESH_TEST_TIMEOUT=$limit s)" >&2
    stage_status=124
    return 124
  fi
  echo "$name" > "$out/current-stage"
  # timeout(1) makes itself the leader of a process group for the command and, when the limit
  # fires, signals the whole group. Whatever of that group outlives the stage (the children of a
  # test process that crashed) is killed afterwards: only this stage's processes are in it.
  timeout -k 20 "$stage_limit" "$@" &
  current_group=$!
  echo "$current_group" >> "$out/stage-groups"
  wait "$current_group"
  stage_status=$?
  kill -KILL -- "-$current_group" 2>/dev/null
  current_group=
  [ "$stage_status" = 137 ] && stage_status=124
  if [ "$stage_status" = 124 ]; then
    echo "test: TIME LIMIT: stage '$name' was still running after $stage_limit s; it was stopped" >&2
  fi
  rm -f "$out/current-stage"
  return "$stage_status"
}

step "dependencies"
t0=$(date +%s)
if run_stage dependencies "${MESH_TEST_DEPS_TIMEOUT:-1200}" scripts/deps.sh; then record "dependencies" - - - $(( $(date +%s) - t0 ))
else echo "test: installing dependencies failed" >&2; exit 1; fi

step "build"
t0=$(date +%s)
run_stage build "${MESH_TEST_BUILD_TIMEOUT:-2400}" bash -c "swift build --build-tests 2>&1 | grep -vE \"^warning: 'swift-distributed-tracing'|found 1 file\\(s\\) which are unhandled|^    /.*swift-distributed-tracing\"; exit \${PIPESTATUS[0]}"
build_status=$stage_status
record "build" - - - $(( $(date +%s) - t0 )) "$([ "$build_status" = 0 ] || echo "FAILED (status $build_status)")"
[ "$build_status" = 0 ] || { echo "test: build failed" >&2; exit 1; }

step "test hygiene"
if python3 scripts/check-tests.py; then record "test hygiene (scripts/check-tests.py)" 1 1 0 0
else record "test hygiene (scripts/check-tests.py)" 1 0 1 0 "FAILED"; hygiene_failed=1; fi

# Every namespace, bridge, veth pair and WireGuard interface this run creates starts with its own
# prefix (Sources/MeshTestSupport/TestNames.swift), so that runs sharing the machine never touch
# each other's, and the clean-up removes this run's objects only.
MESH_TEST_PREFIX=${MESH_TEST_PREFIX:-mt$(tr -dc 'a-z0-9' </dev/urandom | head -c 4)}
export MESH_TEST_PREFIX
echo "test: run prefix $MESH_TEST_PREFIX"
# One base seed for every randomised test of the run (printed; MESH_TEST_SEED=<seed> replays it).
MESH_TEST_SEED=${MESH_TEST_SEED:-$(od -An -N7 -tu8 /dev/urandom | tr -d ' ')}
export MESH_TEST_SEED
echo "test: seed $MESH_TEST_SEED"

infra=$(mktemp -d /tmp/mesh-test-XXXXXX)
# The tests' temporary files and private servers (PrivateInfra) live under the run's own folder, so
# that the clean-up finds the servers of a test that died before stopping them.
chmod 755 "$infra"
export TMPDIR="$infra/tmp"
mkdir -p "$TMPDIR" && chmod 1777 "$TMPDIR"
cleanup() {
  scripts/infra.sh stop "$infra" >/dev/null 2>&1 || true
  for d in "$TMPDIR"/mesh-*/; do
    [ -f "$d/env" ] && scripts/infra.sh stop "$d" >/dev/null 2>&1
  done
  # Anything a failed test of this run left behind: namespaces, bridges, veth pairs, daemons.
  scripts/test-cleanup.sh "$MESH_TEST_PREFIX" || true
  rm -rf "$infra"
}
trap cleanup EXIT

step "start nats-server and PostgreSQL"
scripts/infra.sh start "$infra" >/dev/null || { echo "test: could not start the test servers" >&2; exit 1; }
# shellcheck disable=SC1091
source "$infra/env"
export MESH_REQUIRE_INFRA=1
export MESH_TEST_OUTPUT="$out"

status=${hygiene_failed:-0}

# Kernel WireGuard in the VM (reported as stage 2) starts now and runs beside the Swift tests: they
# mostly wait on servers, namespaces and deadlines (load average 1-2 on the two cores), the VM is
# emulated (TCG) and needs nothing of theirs, and one after the other the two took 14 of a whole
# run's 30 minutes on a cold machine. Its output goes to its log, printed after the Swift tests.
vm_log="$out/vm-test.log"
vm_t0=$(date +%s)
rm -f "$out/vm-status"
(
  run_stage "VM (kernel WireGuard)" "${MESH_TEST_VM_TIMEOUT:-1200}" bash -o pipefail -c 'bash scripts/vm-test.sh > "$0" 2>&1' "$vm_log"
  echo "$stage_status" > "$out/vm-status"
) &
vm_job=$!

# 1. Swift tests: the test binary directly (Swift Testing), with its event stream recorded so that
#    the summary can count the tests and a time limit can name the ones still running. The kernel
#    suites run in the VM (stage 2), not here.
step "Swift tests"
# At most MESH_TEST_PARALLEL tests at once (default 6). All suites share one process, whose
# cooperative thread pool has one thread per core; helpers that wait for a child process (ip, nft,
# infra.sh) block a thread, and with every suite at once on two cores, tests that take 3 s alone ran
# past their 3-minute limits.
bin=$(ls -t .build/debug/quazzar-meshPackageTests.xctest .build/*/debug/quazzar-meshPackageTests.xctest 2>/dev/null | head -1)
events="$out/swift-events.jsonl"
rm -f "$events"
t0=$(date +%s)
run_stage "Swift tests" "${MESH_TEST_SWIFT_TIMEOUT:-1800}" \
  "$bin" --testing-library swift-testing --event-stream-output-path "$events" --event-stream-version 0 \
  --experimental-maximum-parallelization-width "${MESH_TEST_PARALLEL:-6}" \
  --skip 'MeshWireGuardTests\.(KernelBackendTests|ParityTests)|MeshE2ETests\.(KernelNodeApplierTests|WireGuardGoFallbackTests)'
swift_status=$stage_status
swift_seconds=$(( $(date +%s) - t0 ))
python3 scripts/test-report.py "$events" --status "$swift_status" --seconds "$swift_seconds" --summary "$summary" || status=1
[ "$swift_status" = 0 ] || status=1

# 2. Kernel WireGuard in the VM (started before the Swift tests): its end, then its output.
step "kernel WireGuard in a VM (ran beside the Swift tests)"
wait "$vm_job"
vm_seconds=$(( $(date +%s) - vm_t0 ))
vm_status=$(cat "$out/vm-status" 2>/dev/null || echo 1)
cat "$vm_log"
vm_ran=$(grep -oE "vm-test: [0-9]+ tests passed" "$vm_log" | grep -oE "[0-9]+" | head -1)
if [ "$vm_status" = 0 ]; then
  record "VM (kernel WireGuard)" "${vm_ran:-0}" "${vm_ran:-0}" 0 "$vm_seconds" "beside the Swift tests"
else
  status=1
  record "VM (kernel WireGuard)" "${vm_ran:-?}" "?" "≥1" "$vm_seconds" "FAILED (status $vm_status; see $vm_log and .build-vm/console.log)"
fi

# 3. The checks outside Swift. Run with bash, so a lost run bit cannot drop them; the script
#    records one summary line per check.
step "checks outside Swift"
run_stage "checks outside Swift" "${MESH_TEST_EXTRA_TIMEOUT:-1200}" bash scripts/test-extra.sh || status=1
for group in compose browser make-up compose-cluster; do
  grep -q "^$group	" "$summary" || { record "$group" 0 0 1 0 "FAILED: did not run"; status=1; }
done

python3 scripts/test-report.py --print-summary "$summary" --total-seconds "$(elapsed)"
if [ "$status" != 0 ]; then
  echo "test: FAILED (see the summary and the output above; logs in .test-output/)" >&2
else
  echo "test: all passed"
fi
exit "$status"
