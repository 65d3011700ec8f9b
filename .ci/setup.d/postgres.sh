# shellcheck shell=bash
# Sourced by .ci/run: a throwaway PostgreSQL server on loopback for the tuning tests
# (tests/test_tuning.py: several workers fill one Optuna study through RDBStorage).
#
#   1. installs Debian's `postgresql` when its binaries are missing (apt-get; sudo -n unless root),
#   2. initialises a data directory under ${TMPDIR:-/tmp}/bpfree-pg-<uid> (trust auth, 127.0.0.1 only),
#   3. starts the server on a free port, creates user `bpfree` and database `bpfree_test`,
#   4. exports BPFREE_TEST_POSTGRES_URL=postgresql://bpfree@127.0.0.1:<port>/bpfree_test.
#
# Idempotent: a server this script started earlier (same data directory, still running) is reused.
# Never fails CI: when PostgreSQL cannot be installed or started it says why and exports nothing,
# and the PostgreSQL test is skipped with that reason; BPFREE_REQUIRE_POSTGRES=1 makes that an error.
# Stop the server with: pg_ctl -D ${TMPDIR:-/tmp}/bpfree-pg-<uid>/data stop (runuser -u postgres -- when root).

_bpfree_pg_as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

_bpfree_pg_bindir() {
    # the newest installed major version's binaries (Debian keeps them off PATH)
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

_bpfree_pg_setup() {
    local bindir state data port url run=()
    if [ -n "${BPFREE_TEST_POSTGRES_URL:-}" ]; then
        echo "ci: postgres: using BPFREE_TEST_POSTGRES_URL from the environment"
        return 0
    fi
    bindir=$(_bpfree_pg_bindir)
    if [ -z "$bindir" ]; then
        echo "ci: postgres: installing Debian package postgresql"
        _bpfree_pg_as_root apt-get update -qq || true  # a stale index is still worth trying
        DEBIAN_FRONTEND=noninteractive _bpfree_pg_as_root apt-get install -y -qq postgresql >/dev/null \
            || { echo "ci: postgres: apt-get install postgresql failed"; return 1; }
        bindir=$(_bpfree_pg_bindir) || { echo "ci: postgres: no initdb after installing"; return 1; }
    fi
    # initdb and the server refuse to run as root: as root, run them as Debian's `postgres` user.
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || { echo "ci: postgres: running as root but no 'postgres' user"; return 1; }
        run=(runuser -u postgres --)
    fi
    state="${TMPDIR:-/tmp}/bpfree-pg-$(id -u)"
    data="$state/data"
    if [ -f "$state/url" ] && "${run[@]}" "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        url=$(cat "$state/url")
        echo "ci: postgres: reusing the server at $url"
        export BPFREE_TEST_POSTGRES_URL="$url"
        return 0
    fi
    # a stopped or half-made server from an earlier run: start over (it only ever held test data)
    rm -rf "$state"
    mkdir -p "$state" || return 1
    [ ${#run[@]} -gt 0 ] && chown postgres "$state"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') \
        || { echo "ci: postgres: could not pick a free port"; return 1; }
    "${run[@]}" "$bindir/initdb" -D "$data" -U bpfree --auth=trust -E UTF8 >"$state/initdb.log" 2>&1 \
        || { echo "ci: postgres: initdb failed:"; tail -n 5 "$state/initdb.log"; return 1; }
    # listen on loopback only; the socket goes into the data directory (/var/run/postgresql may not be writable)
    "${run[@]}" "$bindir/pg_ctl" -D "$data" -l "$state/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$data" start >/dev/null \
        || { echo "ci: postgres: the server did not start:"; tail -n 5 "$state/server.log"; return 1; }
    "${run[@]}" "$bindir/createdb" -h 127.0.0.1 -p "$port" -U bpfree bpfree_test \
        || { echo "ci: postgres: createdb failed"; return 1; }
    url="postgresql://bpfree@127.0.0.1:$port/bpfree_test"
    echo "$url" >"$state/url"
    export BPFREE_TEST_POSTGRES_URL="$url"
    echo "ci: postgres: server running at $url (data in $data)"
}

if ! _bpfree_pg_setup; then
    if [ "${BPFREE_REQUIRE_POSTGRES:-0}" = 1 ]; then
        echo "ci: postgres: required (BPFREE_REQUIRE_POSTGRES=1) but not available" >&2
        false  # under .ci/run's `set -e` this stops CI
    else
        echo "ci: postgres: not available; the PostgreSQL tuning test will be skipped"
    fi
fi
