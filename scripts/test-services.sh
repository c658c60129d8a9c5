#!/usr/bin/env bash
# Make a real PostgreSQL and a real Redis answer on loopback for the test suite.
#
# Sourced by `make test` (it exports TEST_POSTGRES_* / TEST_REDIS_* for pytest) or run alone.
# Order of attempts for each: already answering -> start the installed server -> install it
# with apt-get (only as root) -> give up and let pytest skip those tests with the reason.
# Never fails the caller: a machine without the servers still runs the SQLite/file-lock half.

export TEST_POSTGRES_HOST="${TEST_POSTGRES_HOST:-127.0.0.1}"
export TEST_POSTGRES_PORT="${TEST_POSTGRES_PORT:-5432}"
export TEST_POSTGRES_USER="${TEST_POSTGRES_USER:-postgres}"
export TEST_REDIS_HOST="${TEST_REDIS_HOST:-127.0.0.1}"
export TEST_REDIS_PORT="${TEST_REDIS_PORT:-6379}"

_say() { echo "[test-services] $*" >&2; }

_apt_install() {
    if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
        _say "cannot install $* (not root or no apt-get)"
        return 1
    fi
    _say "installing $* with apt-get"
    if [ ! -f /var/lib/apt/periodic/.mtgscan-updated ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
        mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/.mtgscan-updated
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

_pg_up() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$TEST_POSTGRES_HOST" -p "$TEST_POSTGRES_PORT" -t 2
    else
        (exec 3<>"/dev/tcp/$TEST_POSTGRES_HOST/$TEST_POSTGRES_PORT") 2>/dev/null
    fi
}

_pg_start() {
    command -v pg_ctlcluster >/dev/null 2>&1 || return 1
    local version
    for version in $(ls /etc/postgresql 2>/dev/null); do
        _say "starting PostgreSQL $version"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
    done
    for _ in $(seq 1 20); do _pg_up && return 0; sleep 0.5; done
    return 1
}

_pg_trust_local() {
    # A freshly installed cluster asks for passwords on TCP; the suite connects as postgres
    # on loopback without one, as on the CI machines.
    local hba
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
        [ -f "$hba" ] || continue
        grep -q "mtgscan-test" "$hba" && continue
        sed -i '1i host all all 127.0.0.1/32 trust # mtgscan-test\nhost all all ::1/128 trust # mtgscan-test' "$hba"
    done
}

_redis_up() {
    if command -v redis-cli >/dev/null 2>&1; then
        [ "$(redis-cli -h "$TEST_REDIS_HOST" -p "$TEST_REDIS_PORT" ping 2>/dev/null)" = "PONG" ]
    else
        (exec 3<>"/dev/tcp/$TEST_REDIS_HOST/$TEST_REDIS_PORT") 2>/dev/null
    fi
}

_redis_start() {
    command -v redis-server >/dev/null 2>&1 || return 1
    _say "starting Redis"
    mkdir -p /tmp/mtgscan-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port "$TEST_REDIS_PORT" --save "" \
        --appendonly no --dir /tmp/mtgscan-redis --logfile /tmp/mtgscan-redis/redis.log \
        >/dev/null 2>&1 || true
    for _ in $(seq 1 20); do _redis_up && return 0; sleep 0.25; done
    return 1
}

if _pg_up; then
    _say "PostgreSQL answers on $TEST_POSTGRES_HOST:$TEST_POSTGRES_PORT"
elif _pg_start; then
    _say "PostgreSQL started"
elif _apt_install postgresql && _pg_trust_local && _pg_start; then
    _say "PostgreSQL installed and started"
else
    _say "no PostgreSQL: the PostgreSQL tests will be skipped"
fi

if _redis_up; then
    _say "Redis answers on $TEST_REDIS_HOST:$TEST_REDIS_PORT"
elif _redis_start; then
    _say "Redis started"
elif _apt_install redis-server && _redis_start; then
    _say "Redis installed and started"
else
    _say "no Redis: the Redis tests will be skipped"
fi
true
