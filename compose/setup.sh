#!/bin/sh
# One-shot set-up for the compose cluster: the demo tenant and admin, and one enrollment token per
# node in /enrollment. Safe to run again (existing ones are kept).
set -eu
tenant=00000000-0000-4000-8000-00000000d3e0
admin=00000000-0000-4000-8000-0000000ad000
until meshctl tenant list --timeout 3 >/dev/null 2>&1; do sleep 1; done
meshctl tenant create --name Demo --plan pro --id "$tenant" 2>/dev/null || true
meshctl user create --tenant "$tenant" --name "Demo admin" --role admin --id "$admin" 2>/dev/null || true
for n in node-1 node-2; do
  [ -s "/enrollment/$n" ] || meshctl node enroll --tenant "$tenant" --admin "$admin" --uses 1 > "/enrollment/$n"
done
echo "admin token (24 h): $(meshctl token user --tenant "$tenant" --user "$admin" --role admin --ttl 86400)"
