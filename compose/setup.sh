#!/bin/sh
# One-shot set-up for the compose cluster: the demo tenant and admin, and one enrollment token per
# node in /enrollment. Safe to run again (existing ones are kept).
#
# Each step is retried (every 2 s, for up to 3 minutes) until it succeeds or finds its result
# already there: on a cold start the services come up one by one, and a request that reaches a
# service not yet ready fails with `unavailable` or a timeout, which must not be taken for
# "already exists".
set -eu
tenant=00000000-0000-4000-8000-00000000d3e0
admin=00000000-0000-4000-8000-0000000ad000

# ensure COMMAND...: runs meshctl COMMAND until it succeeds (its output on stdout) or says alreadyExists.
ensure() {
  tries=0
  while :; do
    if out=$(meshctl "$@" 2>&1); then printf '%s\n' "$out"; return 0; fi
    case "$out" in *alreadyExists*) return 0 ;; esac
    tries=$((tries + 1))
    if [ "$tries" -ge 90 ]; then echo "setup: meshctl $1 $2 failed: $out" >&2; return 1; fi
    sleep 2
  done
}

ensure tenant create --name Demo --plan pro --id "$tenant" >/dev/null
ensure user create --tenant "$tenant" --name "Demo admin" --role admin --id "$admin" >/dev/null
for n in node-1 node-2; do
  if [ ! -s "/enrollment/$n" ]; then
    ensure node enroll --tenant "$tenant" --admin "$admin" --uses 1 > "/enrollment/$n.tmp"
    mv "/enrollment/$n.tmp" "/enrollment/$n"
  fi
done
echo "setup: tenant $tenant, admin $admin, enrollment tokens for node-1 and node-2"
echo "admin token (24 h): $(meshctl token user --tenant "$tenant" --user "$admin" --role admin --ttl 86400)"
