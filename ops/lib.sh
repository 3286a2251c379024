# Shared by ops/run and ops/test: make sure Postgres and Redis answer, starting
# project-private ones under var/ from the machine's own binaries when none does.
# Exports DATABASE_URL and REDIS_URL for what follows.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VAR="$ROOT/var"
mkdir -p "$VAR"

say() { echo "[ops $(date +%H:%M:%S)] $*" >&2; }

# host and port of a postgres:// or redis:// URL
url_host() { local u="${1#*://}"; u="${u#*@}"; u="${u%%/*}"; echo "${u%%:*}"; }
url_port() { local u="${1#*://}"; u="${u#*@}"; u="${u%%/*}"; [[ "$u" == *:* ]] && echo "${u##*:}" || echo "$2"; }

answers() { # host port: something accepts TCP there
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

redis_answers() { # host port: a Redis PING gets PONG
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2; printf 'PING\r\n' >&3; read -r line <&3; [[ \"\$line\" == +PONG* ]]" 2>/dev/null
}

install_packages() { # package...: with the system package manager, where we can
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing $* with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    say "missing: $*. Install them (e.g. 'sudo apt-get install $*') or set DATABASE_URL / REDIS_URL to running servers."
    return 1
  fi
}

pg_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

start_private_postgres() {
  local port=55432 dir="$VAR/postgres"
  local bin; bin="$(pg_bin)"
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    install_packages postgresql postgresql-contrib || exit 1
    bin="$(pg_bin)"
  fi
  # postgres refuses to run as root: run it as the postgres system user then
  local as=()
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home "$dir" postgres
    as=(runuser -u postgres --)
  fi
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown -R postgres "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    say "initialising a private postgres in $dir"
    "${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust >"$dir/initdb.log"
  fi
  if ! answers 127.0.0.1 $port; then
    say "starting the private postgres on 127.0.0.1:$port"
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off" start >/dev/null
  fi
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/${DB_NAME:-instainstru}"
}

start_private_redis() {
  local port=56379 dir="$VAR/redis"
  command -v redis-server >/dev/null || install_packages redis-server || exit 1
  mkdir -p "$dir"
  if ! redis_answers 127.0.0.1 $port; then
    say "starting a private redis on 127.0.0.1:$port"
    redis-server --port $port --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
      --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
    for _ in $(seq 1 50); do redis_answers 127.0.0.1 $port && break; sleep 0.1; done
  fi
  export REDIS_URL="redis://127.0.0.1:$port/0"
}

ensure_services() {
  export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/${DB_NAME:-instainstru}}"
  export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
  if answers "$(url_host "$DATABASE_URL")" "$(url_port "$DATABASE_URL" 5432)"; then
    say "postgres answers at $(url_host "$DATABASE_URL"):$(url_port "$DATABASE_URL" 5432)"
  else
    say "no postgres at $(url_host "$DATABASE_URL"):$(url_port "$DATABASE_URL" 5432)"
    start_private_postgres
  fi
  if redis_answers "$(url_host "$REDIS_URL")" "$(url_port "$REDIS_URL" 6379)"; then
    say "redis answers at $(url_host "$REDIS_URL"):$(url_port "$REDIS_URL" 6379)"
  else
    say "no redis at $(url_host "$REDIS_URL"):$(url_port "$REDIS_URL" 6379)"
    start_private_redis
  fi
  # tests start their own redis-server for restart scenarios
  command -v redis-server >/dev/null || install_packages redis-server || true
}

ensure_ics_validator() { # Python's icalendar package: the email tests validate invitations with it
  local python="${PYTHON:-python3}"
  if ! command -v "$python" >/dev/null; then
    say "no $python: the email tests will skip (loudly) their third-party iCalendar validation"
    return 0
  fi
  "$python" -c 'import icalendar' 2>/dev/null && return 0
  say "installing the Python package icalendar (the email tests' iCalendar validator)"
  "$python" -m pip install -q icalendar >/dev/null 2>&1 ||
    install_packages python3-icalendar ||
    say "could not install icalendar: the invitation tests will fail until it is (pip install icalendar)"
}

ensure_rust() {
  command -v cargo >/dev/null || { say "cargo is missing: install Rust (rustup) first"; exit 1; }
}
