# Shared by scripts/up.sh, status.sh, down.sh and test-up.sh (sourced, from the checkout's root):
# names, the state folder, and talking to the supervisor. See scripts/up.sh for the settings.

up_name=${MESH_UP_NAME:-mesh-demo}
state=${MESH_UP_STATE:-$(pwd)/.mesh}
case "$state" in /*) ;; *) state="$(pwd)/$state" ;; esac
bridge="$up_name-br"
sv_conf="$state/supervisor/supervisord.conf"
sv_sock="$state/run/supervisor.sock"

# supervisorctl against this state folder's supervisord (never the system-wide one).
sv_ctl() { supervisorctl -c "$sv_conf" "$@"; }

# True when this state folder's supervisord answers on its socket. A supervisord that was killed
# and not reaped yet (a zombie: `kill -0` would still say it exists) does not answer.
sv_running() { [ -f "$sv_conf" ] && [ -S "$sv_sock" ] && sv_ctl pid 2>/dev/null | grep -qE '^[0-9]+$'; }

# Starts the named programs unless they are running already; waits until each is RUNNING (it must
# stay up for startsecs). Returns non-zero if any does not get there.
sv_start() {
  local p st rc=0
  for p in "$@"; do
    st=$(sv_ctl status "$p" 2>/dev/null | awk '{print $2}')
    case "$st" in
      RUNNING) echo "  $p: already running ($(sv_ctl status "$p" | awk '{$1=""; $2=""; print}' | sed 's/^ *//'))" ;;
      *) if sv_ctl start "$p" > /dev/null 2>&1 || [ "$(sv_ctl status "$p" | awk '{print $2}')" = RUNNING ]; then
           echo "  $p: started ($(sv_ctl status "$p" | awk '{$1=""; $2=""; print}' | sed 's/^ *//'))"
         else
           echo "  $p: did not start: $(sv_ctl status "$p")" >&2
           tail -n 15 "$state/logs/$p.log" >&2 2>/dev/null
           rc=1
         fi ;;
    esac
  done
  return $rc
}

# Quotes one word for a supervisord `command=` line (POSIX shell-like splitting; `%` is special).
sv_quote() { local s=${1//%/%%}; printf "'%s'" "${s//\'/\'\"\'\"\'}"; }

sv_header() {
  cat <<CONF
; Written by scripts/up.sh on every run; edit up.sh, not this file.
[unix_http_server]
file=${sv_sock//%/%%}
chmod=0700

[supervisord]
logfile=${state//%/%%}/logs/supervisord.log
logfile_maxbytes=10MB
logfile_backups=3
loglevel=info
pidfile=${state//%/%%}/run/supervisord.pid
childlogdir=${state//%/%%}/logs
identifier=quazzar-mesh-$up_name

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://${sv_sock//%/%%}
CONF
}

# sv_program NAME PRIORITY USER COMMAND...   with the program's environment in the array sv_env
# (KEY=VALUE entries). Every program is started by up.sh in order (autostart=false) and restarted by
# supervisord whenever it exits (autorestart=true), at once and then with a growing back-off if it
# keeps failing within a second of starting; it never gives up for good (startretries is large).
# PostgreSQL and nats-server stop on SIGINT (a fast shutdown; nats-server exits 1 on SIGTERM).
sv_program() {
  local name=$1 priority=$2 user=$3; shift 3
  local cmd="" w env="" kv
  for w in "$@"; do cmd+="$(sv_quote "$w") "; done
  for kv in MESH_UP_SUPERVISED="$state" "${sv_env[@]+"${sv_env[@]}"}"; do
    kv=${kv//%/%%}
    env+="${kv%%=*}=\"${kv#*=}\","
  done
  cat <<CONF

[program:$name]
command=$cmd
directory=${root//%/%%}
priority=$priority
autostart=false
autorestart=true
startsecs=1
startretries=1000000
stopsignal=$(case "$name" in postgres|nats) echo INT ;; *) echo TERM ;; esac)
stopwaitsecs=15
redirect_stderr=true
stdout_logfile=${state//%/%%}/logs/$name.log
stdout_logfile_maxbytes=10MB
stdout_logfile_backups=3
environment=${env%,}
CONF
  [ -n "$user" ] && echo "user=$user"
  true
}

# Processes started for this state folder (every program, and whatever it starts, carries
# MESH_UP_SUPERVISED=<state> in its environment) that are still alive, zombies excepted. Prints
# their pids.
up_processes() {
  local f pid st
  for f in /proc/[0-9]*/environ; do
    pid=${f#/proc/}; pid=${pid%/environ}
    [ "$pid" = $$ ] && continue
    tr '\0' '\n' 2>/dev/null < "$f" | grep -qxF "MESH_UP_SUPERVISED=$state" || continue
    st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || continue
    [ "$st" = Z ] || [ -z "$st" ] || echo "$pid"
  done
}

# Stops processes of this state folder that no supervisord watches any more (their supervisord was
# killed): SIGTERM, then SIGKILL after 10 s.
kill_orphans() {
  local pids pid
  pids=$(up_processes)
  [ -n "$pids" ] || return 0
  echo "  stopping $(echo "$pids" | wc -w) process(es) left from a supervisord that is gone: $(echo $pids)"
  for pid in $pids; do kill -TERM "$pid" 2>/dev/null; done
  for _ in $(seq 1 50); do [ -z "$(up_processes)" ] && return 0; sleep 0.2; done
  for pid in $(up_processes); do kill -KILL "$pid" 2>/dev/null; done
  sleep 0.5
}

# The PostgreSQL server binaries.
pg_bin() {
  local b; b=$(pg_config --bindir 2>/dev/null || true)
  if [ -z "$b" ] || [ ! -x "$b/postgres" ]; then b=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1); fi
  echo "$b"
}

# Where PostgreSQL keeps its data: <state>/pg when the postgres user can reach it (PostgreSQL
# refuses to run as root), otherwise a folder of this state's own under /var/lib/quazzar-mesh (a
# checkout under /root, say, is closed to other users). Remembered in <state>/pgdir.
pg_data_dir() {
  if [ -s "$state/pgdir" ]; then cat "$state/pgdir"; return; fi
  local d="$state/pg"
  chmod a+x "$state" 2>/dev/null || true
  if ! runuser -u postgres -- test -x "$state"; then
    d="/var/lib/quazzar-mesh/up-$(printf '%s' "$state" | sha1sum | cut -c1-12)/pg"
    mkdir -p "$(dirname "$d")"
  fi
  echo "$d" | tee "$state/pgdir"
}

# Waits (10 s) until host:port accepts TCP connections.
wait_tcp() {
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
