#!/usr/bin/env bash
# Removes what one test run left on the host, and nothing else:
#
#   scripts/test-cleanup.sh PREFIX
#
# PREFIX is the run's MESH_TEST_PREFIX (6 characters, see Sources/MeshTestSupport/TestNames.swift):
# every network namespace (PREFIX-*), link (bridge, veth end, wireguard-go interface: PREFIX*),
# wireguard-go daemon and UAPI socket the run made carries it. Other runs on the same machine use
# other prefixes, so their objects are left alone. Prints what it removed.
set -uo pipefail

prefix=${1:-}
[[ "$prefix" =~ ^[a-z][a-z0-9]{5}$ ]] || { echo "test-cleanup: refusing prefix '$prefix' (want 6 characters, [a-z][a-z0-9]{5})" >&2; exit 2; }

# Namespaces: kill what runs inside (NodeApplier, wireguard-go, ...) first, then delete them.
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${prefix}-" || true); do
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  for link in $(ip -n "$ns" -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    rm -f "/var/run/wireguard/$link.sock"
  done
  ip netns del "$ns" 2>/dev/null && echo "test-cleanup: removed namespace $ns"
done

# wireguard-go daemons in the host namespace serving one of the run's interfaces.
for cmdline in /proc/[0-9]*/cmdline; do
  pid=${cmdline#/proc/}; pid=${pid%/cmdline}
  args=$( (tr '\0' ' ' < "$cmdline") 2>/dev/null) || continue
  case "$args" in
    *wireguard-go*" ${prefix}"*) kill -9 "$pid" 2>/dev/null && echo "test-cleanup: killed wireguard-go $pid ($args)" ;;
  esac
done

# Links left in the host namespace: bridges, the host ends of veth pairs, wireguard-go interfaces.
for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E "^${prefix}" || true); do
  ip link del "$link" 2>/dev/null && echo "test-cleanup: removed link $link"
done
for sock in /var/run/wireguard/"${prefix}"*.sock; do
  [ -e "$sock" ] && rm -f "$sock" && echo "test-cleanup: removed $sock"
done
exit 0
