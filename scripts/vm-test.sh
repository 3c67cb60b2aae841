#!/usr/bin/env bash
# Runs the kernel-WireGuard tests (MeshWireGuardTests: KernelBackendTests, ParityTests,
# BackendSelectionTests; MeshE2ETests.KernelNodeApplierTests, the NodeApplier daemon on the module with
# a control plane inside the VM) inside a throw-away VM, because the host kernel has no wireguard
# module; then unloads the module and runs MeshE2ETests.WireGuardGoFallbackTests (NodeApplier starts
# wireguard-go by itself).
#
#   scripts/vm-test.sh [--filter REGEX]
#
# How it works:
#   1. Downloads (never installs) the Debian kernel package linux-image-amd64 points at, unpacks it
#      with dpkg-deb into .build-vm/, and runs depmod there.
#   2. Builds a busybox-static initramfs holding only the wireguard, veth, tun and virtio/9p modules
#      (with their dependencies, resolved from modules.dep).
#   3. Boots it under qemu-system-x86_64 (TCG, no KVM, -nic none). The VM mounts the host root
#      read-only over virtio-9p, puts fresh proc/sys/dev/tmp/run on top (a checkout that lives
#      under /tmp is bound back into the fresh /tmp, so any folder works), chroots into it (so the
#      Swift runtime, `wg`, `ip` and wireguard-go are the host's) and runs the already-built test
#      binary with MESH_WG_REQUIRE_KERNEL=1, which turns "no kernel module" into a failure.
#   4. The console goes to .build-vm/console.log; the exit status comes back as a marker line.
#
# Fails loudly (non-zero exit, message on stderr) if anything is missing, the VM does not boot, the
# tests do not report, no test ran, or any test fails. It never skips. Prints "vm-test: N tests
# passed" at the end (scripts/test.sh reads it). Build the tests first (swift build --build-tests).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
vm="$root/.build-vm"
log="$vm/console.log"
filter='MeshWireGuardTests\.(KernelBackendTests|ParityTests|BackendSelectionTests)'
# Then, one run each (they start a control plane, and would compete with the others for the VM's
# two emulated CPUs): the NodeApplier daemon on the module, and, once the module is unloaded, the
# fallback to wireguard-go. Not with --filter.
node_filter='MeshE2ETests\.KernelNodeApplierTests'
fallback_filter='MeshE2ETests\.WireGuardGoFallbackTests'
[ "${1:-}" = "--filter" ] && filter=$2 && node_filter='' && fallback_filter=''
timeout_s=${MESH_VM_TIMEOUT:-1100}

fail() { echo "vm-test: FAILED: $*" >&2; exit 1; }

for tool in qemu-system-x86_64 busybox cpio depmod dpkg-deb apt-get; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (scripts/deps.sh installs it)"
done
[ "$(id -u)" = 0 ] || fail "must run as root (network namespaces, netlink)"

bin=$(ls -t "$root"/.build/debug/quazzar-meshPackageTests.xctest "$root"/.build/*/debug/quazzar-meshPackageTests.xctest 2>/dev/null | head -1 || true)
[ -n "$bin" ] && [ -x "$bin" ] || fail "test binary not found; run 'swift build --build-tests' first"
bin=$(readlink -f "$bin")

mkdir -p "$vm/dl"

# 1. Kernel: the version linux-image-amd64 currently depends on.
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$pkg" ]; then
  apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null 2>&1 || true
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
fi
[ -n "$pkg" ] || fail "cannot resolve linux-image-amd64 to a versioned kernel package"
kver=${pkg#linux-image-}
kdir="$vm/kernel-$kver"
if [ ! -f "$kdir/.ready" ]; then
  echo "vm-test: fetching $pkg (download only, not installed)"
  rm -rf "$kdir"
  (cd "$vm/dl" && apt-get download "$pkg" >/dev/null 2>&1) || fail "apt-get download $pkg failed"
  deb=$(ls -t "$vm/dl/${pkg}"_*.deb | head -1)
  dpkg-deb -x "$deb" "$kdir" || fail "dpkg-deb -x $deb failed"
  depmod -b "$kdir" "$kver" || fail "depmod failed"
  touch "$kdir/.ready"
fi
vmlinuz="$kdir/boot/vmlinuz-$kver"
moddir="$kdir/lib/modules/$kver"
[ -f "$vmlinuz" ] || fail "no kernel image at $vmlinuz"

# 2. Initramfs: busybox plus the modules, in dependency order.
want=(virtio_pci 9pnet_virtio 9p wireguard veth tun bridge)
declare -A seen=()
order=()
resolve() {  # depth-first: dependencies before the module
  local name=$1 line path dep
  line=$(grep -E "/${name}\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | head -1 || true)
  if [ -z "$line" ]; then
    # Built into the kernel: nothing to load.
    grep -qE "/${name}\.ko" "$moddir/modules.builtin" && return 0
    fail "module $name not found in $moddir"
  fi
  path=${line%%:*}
  [ -n "${seen[$path]:-}" ] && return 0
  seen[$path]=1
  for dep in ${line#*:}; do
    local d; d=$(basename "$dep"); d=${d%%.ko*}
    resolve "$d"
  done
  order+=("$path")
}
for m in "${want[@]}"; do resolve "$m"; done

initrd="$vm/initramfs-$kver.cpio.gz"
stage="$vm/initramfs"
rm -rf "$stage"
mkdir -p "$stage"/{bin,dev,proc,sys,host,lib/modules}
cp "$(command -v busybox)" "$stage/bin/busybox"
for p in "${order[@]}"; do
  case "$p" in
    *.ko) cp "$moddir/$p" "$stage/lib/modules/" ;;
    *.ko.xz) xz -dc "$moddir/$p" > "$stage/lib/modules/$(basename "${p%.xz}")" ;;
    *.ko.zst) zstd -qdc "$moddir/$p" > "$stage/lib/modules/$(basename "${p%.zst}")" ;;
    *) fail "unknown module format $p" ;;
  esac
  basename "${p%.xz}" | sed 's/\.zst$//' >> "$stage/modules.order"
done

# Where the checkout is: the VM's init binds it back when it lives under /tmp (which gets a fresh tmpfs).
printf '%s\n' "$root" > "$stage/checkout"

# The command the VM runs, chrooted into the host root. Runs the suites with the kernel required.
cat > "$stage/run-tests" <<EOF
cd "$root"
export HOME=/tmp PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin MESH_WG_REQUIRE_KERNEL=1 NO_COLOR=1
export MESH_TEST_PREFIX=${MESH_TEST_PREFIX:-}
# The NodeApplier daemon test needs the control plane: nats-server and PostgreSQL of the VM's own
# (scripts/infra.sh), and the service executables started by the test, all inside the VM.
scratch="\${TMPDIR:-/tmp}"
export MESH_TEST_OUTPUT="\$scratch/test-output"
# Its timings go to the console (a loaded host slows the emulated CPU); a failure is reported by
# name at the end, and the daemon tests then fail on the missing servers.
if scripts/infra.sh start "\$scratch/infra" > /dev/null 2> "\$scratch/infra.log"; then
  sed 's/^/VMTEST-INFO /' "\$scratch/infra.log"
  . "\$scratch/infra/env"; export MESH_REQUIRE_INFRA=1
else
  sed 's/^/VMTEST-INFRA-FAILED /' "\$scratch/infra.log"
fi
"$bin" --testing-library swift-testing --filter '$filter'
rc=\$?
if [ -n '$node_filter' ]; then
  "$bin" --testing-library swift-testing --filter '$node_filter' || rc=1
fi
# NodeApplier's automatic fallback, end to end: with the module gone, it must start wireguard-go itself.
if [ -n '$fallback_filter' ]; then
  if rmmod wireguard; then
    MESH_WG_REQUIRE_KERNEL=0 MESH_WG_REQUIRE_NO_KERNEL=1 "$bin" --testing-library swift-testing --filter '$fallback_filter' || rc=1
  else
    echo "VMTEST-WARN cannot unload the wireguard module for the fallback test"; rc=1
  fi
fi
exit \$rc
EOF

cat > "$stage/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "VMTEST-BOOTED $(uname -r)"
for m in $(cat /modules.order); do
  insmod "/lib/modules/$m" || echo "VMTEST-WARN insmod $m failed"
done
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose hostroot /host; then
  echo "VMTEST-EXIT=97 (cannot mount the host root over 9p)"
  poweroff -f
fi
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/pts /host/dev/shm 2>/dev/null
# The host's /tmp stays reachable at /hosttmp; a fresh tmpfs goes over /tmp. A checkout under /tmp
# (a clone in /tmp/x) would be hidden by it, so it is bound back at its own path.
mkdir -p /hosttmp
mount -o bind /host/tmp /hosttmp
mount -t tmpfs tmpfs /host/tmp
checkout=$(cat /checkout)
case "$checkout" in
  /tmp/*)
    mkdir -p "/host$checkout"
    if ! mount -o bind "/hosttmp${checkout#/tmp}" "/host$checkout"; then
      echo "VMTEST-EXIT=96 (cannot bind the checkout $checkout back under the fresh /tmp)"
      poweroff -f
    fi
    ;;
esac
mount -t tmpfs tmpfs /host/run
mount -t tmpfs tmpfs /host/dev/shm 2>/dev/null
mkdir -p /host/run/netns /host/run/wireguard
cp /run-tests /host/tmp/run-tests
ip link set lo up 2>/dev/null
echo "VMTEST-START"
chroot /host /bin/bash /tmp/run-tests
rc=$?
echo "VMTEST-EXIT=$rc"
sync
poweroff -f
EOF
chmod +x "$stage/init"
(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) > "$initrd"

# 3. Boot. TCG only; no network device.
echo "vm-test: booting $kver under qemu (TCG); console: $log"
: > "$log"
set +e
timeout "$timeout_s" qemu-system-x86_64 \
  -machine pc,accel=tcg -cpu max -smp 2 -m 3072 \
  -nic none -display none -no-reboot \
  -serial "file:$log" -monitor none \
  -kernel "$vmlinuz" -initrd "$initrd" \
  -append "console=ttyS0 panic=-1 quiet loglevel=3" \
  -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"
qrc=$?
set -e

# 4. Verdict from the console.
sed -n '/VMTEST-START/,/VMTEST-EXIT/p' "$log" | grep -av -E '^VMTEST-(START|EXIT)' || true
grep -q "VMTEST-BOOTED" "$log" || fail "the VM did not boot (qemu exit $qrc); console in $log"
[ "$qrc" = 124 ] && fail "the VM did not finish within ${timeout_s}s; console in $log"
exitline=$(grep -a -o "VMTEST-EXIT=[0-9]*" "$log" | tail -1 || true)
[ -n "$exitline" ] || fail "the tests in the VM did not report (qemu exit $qrc); console in $log"
rc=${exitline#VMTEST-EXIT=}
if [ "$rc" != 0 ] && grep -aq "^VMTEST-INFRA-FAILED" "$log"; then
  grep -a "^VMTEST-INFRA-FAILED" "$log" | sed 's/^VMTEST-INFRA-FAILED /vm-test: /' >&2
  fail "nats-server and PostgreSQL did not start inside the VM (above), so the NodeApplier daemon tests could not run (exit $rc); console in $log"
fi
[ "$rc" = 0 ] || fail "kernel WireGuard tests failed in the VM (exit $rc); console in $log"
# One test run, or three with the node and fallback runs: each must have passed; their tests add up.
runs=$(grep -acE "Test run with [0-9]+ tests?" "$log" || true)
passes=$(grep -acE "Test run with [0-9]+ tests? .*passed" "$log" || true)
ran=$(grep -aoE "Test run with [0-9]+ tests?" "$log" | grep -oE "[0-9]+" | awk '{ s += $1 } END { print s + 0 }')
[ "${runs:-0}" -gt 0 ] && [ "$passes" = "$runs" ] || fail "no passing test run reported ($passes of ${runs:-0} runs passed); console in $log"
[ -n "$fallback_filter" ] && [ "$runs" != 3 ] && fail "the node and fallback runs did not both report; console in $log"
[ -n "$ran" ] && [ "$ran" -gt 0 ] || fail "the test run in the VM ran no test (filter '$filter'); console in $log"
echo "vm-test: $ran tests passed in the VM ($kver)"
