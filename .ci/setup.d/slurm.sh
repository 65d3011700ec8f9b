# shellcheck shell=bash
# Sourced by .ci/run: a throwaway one-node Slurm cluster on this machine for tests/test_slurm.py
# (sweeps through `--launcher slurm`, i.e. submitit's Slurm executor, and tuning workers as an array).
#
#   1. installs Debian's slurm-wlm, slurmdbd, munge and mariadb-server when missing (apt-get; sudo -n
#      unless root). The accounting daemon is not optional: submitit learns that a task was cancelled,
#      timed out or killed from `sacct`, which needs slurmdbd (and slurmdbd a MariaDB),
#   2. writes slurm.conf and slurmdbd.conf for this one node under $BPFREE_SLURM_STATE (default
#      /tmp/bpfree-slurm): NodeName=$(hostname -s), CPUs and memory from `slurmd -C`, one partition
#      `debug`, select/cons_tres, proctrack/linuxproc, task/none (no cgroups, no systemd), free ports,
#   3. starts munged (own socket), a MariaDB (own data directory, 127.0.0.1), slurmdbd, slurmctld and
#      slurmd directly, as daemons, with their logs and pid files in the state directory,
#   4. waits (at most 60 s) until `sinfo -h -o %T` says idle and `srun -N1 true` runs, then exports
#      SLURM_CONF=<state>/etc/slurm.conf and BPFREE_TEST_SLURM=1.
#
# Idempotent: a cluster this script started earlier (same state directory, every daemon alive, the
# node answering) is reused; a half-dead one is stopped (by its pid files) and started afresh.
# Never fails CI: when Slurm cannot be installed or started it says why and exports nothing, and
# the Slurm tests are skipped with that reason; BPFREE_REQUIRE_SLURM=1 makes that an error.
# BPFREE_TEST_SLURM=1 already set: a cluster of your own is used as it is (SLURM_CONF, if any, kept).
# The daemons run as root (slurmd must); without root or passwordless sudo there is no cluster.
# Stop it with: bash .ci/setup.d/slurm.sh stop       (status: bash .ci/setup.d/slurm.sh status)

_BPFREE_SLURM_SCRIPT="${BASH_SOURCE[0]}"

_bpfree_slurm_as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

# -- root side: run as `bash slurm.sh start|stop|status` (as root) -----------------------------------
_bpfree_slurm_state() { echo "${BPFREE_SLURM_STATE:-/tmp/bpfree-slurm}"; }

_bpfree_slurm_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

_bpfree_slurm_alive() {  # the pid in pid file run/$1.pid is running and is that daemon (not a pid reused since)
    local pidfile pid
    pidfile="$(_bpfree_slurm_state)/run/$1.pid"
    [ -s "$pidfile" ] && pid=$(cat "$pidfile" 2>/dev/null) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
        && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "${1/mariadb/mariadbd}" ]
}

_bpfree_slurm_stop() {
    local state pid name
    state=$(_bpfree_slurm_state)
    # jobs first (their processes are the cluster's too), then the daemons in the reverse order of
    # starting: only the processes this script started, by their pid files
    if _bpfree_slurm_alive slurmctld; then
        SLURM_CONF="$state/etc/slurm.conf" scancel --partition=debug >/dev/null 2>&1
        _bpfree_slurm_wait 15 _bpfree_slurm_no_jobs "$state"
    fi
    for name in slurmd slurmctld slurmdbd mariadb munged; do
        _bpfree_slurm_alive "$name" || continue
        pid=$(cat "$state/run/$name.pid")
        kill "$pid" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    done
    # slurmstepd of jobs still running belong to the cluster too
    if [ -f "$state/etc/slurm.conf" ]; then
        for pid in $(pgrep -x slurmstepd 2>/dev/null); do
            grep -qs "$state" "/proc/$pid/environ" "/proc/$pid/cmdline" && kill -9 "$pid" 2>/dev/null
        done
    fi
    return 0
}

_bpfree_slurm_wait() {  # $1 seconds, $2... a command that succeeds when ready
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge $deadline ] && return 1
        sleep 1
    done
}

_bpfree_slurm_no_jobs() {
    [ -z "$(SLURM_CONF="$1/etc/slurm.conf" squeue -h -o %i 2>/dev/null)" ]
}

_bpfree_slurm_node_idle() {
    sinfo -h -o %T 2>/dev/null | grep -qx idle
}

_bpfree_slurm_answers() {  # every daemon alive and the node up (idle, mixed or allocated)
    local state name
    state=$(_bpfree_slurm_state)
    for name in munged mariadb slurmdbd slurmctld slurmd; do
        _bpfree_slurm_alive "$name" || return 1
    done
    SLURM_CONF="$state/etc/slurm.conf" sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated|completing)'
}

_bpfree_slurm_start() {
    local state host node cpus mem ctld_port slurmd_port dbd_port db_port first_job missing=() pkg cmd
    state=$(_bpfree_slurm_state)
    if _bpfree_slurm_answers; then
        echo "ci: slurm: reusing the cluster in $state"
        echo "SLURM_CONF=$state/etc/slurm.conf"
        return 0
    fi
    for pkg in slurm-wlm slurmdbd munge mariadb-server; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    if [ ${#missing[@]} -gt 0 ]; then
        command -v apt-get >/dev/null || { echo "ci: slurm: no apt-get to install ${missing[*]}"; return 1; }
        echo "ci: slurm: installing Debian packages: ${missing[*]}"
        apt-get update -qq || true  # a stale index is still worth trying
        # no recommends (slurm-wlm's would add every plugin and its -dev package); without an init
        # system the packages cannot start their own services, which is fine: this script starts them
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
            || { echo "ci: slurm: apt-get install ${missing[*]} failed"; return 1; }
    fi
    for cmd in munged slurmctld slurmd slurmdbd sinfo srun mariadbd mariadb-install-db mariadb; do
        command -v "$cmd" >/dev/null || { echo "ci: slurm: $cmd is missing after installing"; return 1; }
    done
    if ! id munge >/dev/null 2>&1 || ! id mysql >/dev/null 2>&1; then
        echo "ci: slurm: no 'munge' or 'mysql' user"; return 1
    fi

    # a stopped or half-dead cluster from an earlier run: start over (it only ever held test jobs)
    _bpfree_slurm_stop
    rm -rf "$state"
    mkdir -p "$state"/{etc,run,log,ctld,spool,munge,mysql} 2>/dev/null || { echo "ci: slurm: cannot create $state"; return 1; }
    chmod 755 "$state" "$state/etc"
    host=$(hostname -s)
    # `slurmd -C`: NodeName=<host> CPUs=.. Boards=.. SocketsPerBoard=.. CoresPerSocket=.. ThreadsPerCore=.. RealMemory=..
    node=$(slurmd -C 2>/dev/null | head -n 1)
    [ -n "$node" ] || { echo "ci: slurm: slurmd -C printed nothing"; return 1; }
    cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node")
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
    # a node whose memory reads a little lower later must not be drained for it
    node=$(sed "s/RealMemory=[0-9]*/RealMemory=$((mem * 9 / 10))/; s/^NodeName=[^ ]*/NodeName=$host/" <<<"$node")
    if ! { ctld_port=$(_bpfree_slurm_free_port) && slurmd_port=$(_bpfree_slurm_free_port) \
           && dbd_port=$(_bpfree_slurm_free_port) && db_port=$(_bpfree_slurm_free_port); }; then
        echo "ci: slurm: could not pick free ports"; return 1
    fi

    first_job=$(( $(date +%s) % 60000000 + 1 ))  # below MaxJobId (67043328)
    # munge: the machine's key (created when missing), a socket of our own
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge && chown munge:munge /etc/munge && chmod 700 /etc/munge
        if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
        else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
        chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
        echo "ci: slurm: created /etc/munge/munge.key"
    fi
    chown munge:munge "$state/munge" && chmod 755 "$state/munge"
    runuser -u munge -- munged --socket="$state/munge/munge.socket.2" --key-file=/etc/munge/munge.key \
        --log-file="$state/munge/munged.log" --pid-file="$state/munge/munged.pid" \
        --seed-file="$state/munge/munged.seed" >"$state/log/munged.out" 2>&1 \
        || { echo "ci: slurm: munged did not start:"; tail -n 5 "$state/log/munged.out" "$state/munge/munged.log" 2>/dev/null; return 1; }
    ln -sf "$state/munge/munged.pid" "$state/run/munged.pid"
    _bpfree_slurm_wait 10 munge -n -S "$state/munge/munge.socket.2" \
        || { echo "ci: slurm: munge does not answer"; return 1; }

    # MariaDB for slurmdbd: own data directory, loopback TCP only
    chown mysql:mysql "$state/mysql"
    mariadb-install-db --user=mysql --datadir="$state/mysql/data" --skip-test-db \
        --auth-root-authentication-method=socket >"$state/log/mariadb-install.log" 2>&1 \
        || { echo "ci: slurm: mariadb-install-db failed:"; tail -n 5 "$state/log/mariadb-install.log"; return 1; }
    setsid mariadbd --no-defaults --user=mysql --datadir="$state/mysql/data" --socket="$state/mysql/mysqld.sock" \
        --pid-file="$state/mysql/mariadb.pid" --bind-address=127.0.0.1 --port="$db_port" \
        --log-error="$state/mysql/mariadb.log" --innodb-buffer-pool-size=64M </dev/null >/dev/null 2>&1 &
    ln -sf "$state/mysql/mariadb.pid" "$state/run/mariadb.pid"
    _bpfree_slurm_wait 60 mariadb-admin --no-defaults --socket="$state/mysql/mysqld.sock" -u root ping \
        || { echo "ci: slurm: MariaDB did not start:"; tail -n 5 "$state/mysql/mariadb.log"; return 1; }
    mariadb --no-defaults --socket="$state/mysql/mysqld.sock" -u root -e "
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';" \
        || { echo "ci: slurm: could not create the database user"; return 1; }

    # the configuration: slurmdbd reads slurmdbd.conf beside $SLURM_CONF
    cat >"$state/etc/slurm.conf" <<EOF
# written by .ci/setup.d/slurm.sh (bpfree CI): one node, throwaway
ClusterName=bpfree
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
AuthInfo=socket=$state/munge/munge.socket.2
CredType=cred/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool/slurmd-%n
SlurmctldPidFile=$state/run/slurmctld.pid
SlurmdPidFile=$state/run/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$dbd_port
# (for the connections to slurmdbd: the munge socket to use, not a password)
AccountingStoragePass=$state/munge/munge.socket.2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
# quick turnarounds for tests: a cancelled task gets SIGKILL 5 s after SIGTERM; finished jobs stay
# visible to squeue/scontrol for 5 minutes (sacct keeps them for good)
KillWait=5
MinJobAge=300
# job ids that a restarted cluster does not hand out again: submitit names its folders (logs, results) by them
FirstJobId=$first_job
InactiveLimit=0
SlurmdTimeout=300
$node State=UNKNOWN NodeAddr=127.0.0.1
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$state/etc/slurmdbd.conf" <<EOF
# written by .ci/setup.d/slurm.sh (bpfree CI)
AuthType=auth/munge
AuthInfo=socket=$state/munge/munge.socket.2
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$dbd_port
SlurmUser=root
LogFile=$state/log/slurmdbd.log
PidFile=$state/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$state/etc/slurmdbd.conf"
    chmod 644 "$state/etc/slurm.conf"
    export SLURM_CONF="$state/etc/slurm.conf"

    # the daemons fork into the background themselves; setsid keeps them out of CI's process group
    setsid slurmdbd </dev/null >"$state/log/slurmdbd.out" 2>&1 \
        || { echo "ci: slurm: slurmdbd did not start:"; tail -n 5 "$state/log/slurmdbd.out" "$state/log/slurmdbd.log"; return 1; }
    _bpfree_slurm_wait 30 sacctmgr -n list cluster \
        || { echo "ci: slurm: slurmdbd does not answer:"; tail -n 5 "$state/log/slurmdbd.log"; return 1; }
    sacctmgr -i add cluster bpfree >/dev/null 2>&1 || true  # slurmctld would add it too
    setsid slurmctld </dev/null >"$state/log/slurmctld.out" 2>&1 \
        || { echo "ci: slurm: slurmctld did not start:"; tail -n 5 "$state/log/slurmctld.out" "$state/log/slurmctld.log"; return 1; }
    setsid slurmd </dev/null >"$state/log/slurmd.out" 2>&1 \
        || { echo "ci: slurm: slurmd did not start:"; tail -n 5 "$state/log/slurmd.out" "$state/log/slurmd.log"; return 1; }
    _bpfree_slurm_wait 60 _bpfree_slurm_node_idle \
        || { echo "ci: slurm: the node is not idle after 60 s: $(sinfo -h -o '%T %E' 2>&1)";
             tail -n 5 "$state/log/slurmctld.log" "$state/log/slurmd.log"; return 1; }
    # a spare convenience for interactive use: plain `sinfo` without SLURM_CONF, where nothing else is configured
    if [ ! -e /etc/slurm/slurm.conf ] || [ "$(readlink /etc/slurm/slurm.conf)" = "$state/etc/slurm.conf" ]; then
        mkdir -p /etc/slurm && ln -sfn "$state/etc/slurm.conf" /etc/slurm/slurm.conf
    fi
    echo "ci: slurm: one-node cluster up ($host: $cpus CPUs, partition debug; state, logs in $state)"
    echo "SLURM_CONF=$state/etc/slurm.conf"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then  # executed: the root side
    case "${1:-}" in
        start) _bpfree_slurm_start; exit $? ;;
        stop) _bpfree_slurm_stop; echo "ci: slurm: stopped the cluster in $(_bpfree_slurm_state)"; exit 0 ;;
        status) if _bpfree_slurm_answers; then echo "running ($(_bpfree_slurm_state))"; exit 0; fi
                echo "not running"; exit 1 ;;
        *) echo "usage: bash $0 start|stop|status (or source it, as .ci/run does)" >&2; exit 2 ;;
    esac
fi

# -- sourced: start (as root) or reuse the cluster, check it runs a job as this user, export ---------
_bpfree_slurm_setup() {
    local out conf
    if [ "${BPFREE_TEST_SLURM:-0}" = 1 ]; then
        echo "ci: slurm: using the cluster of BPFREE_TEST_SLURM=1 from the environment"
        return 0
    fi
    if [ "$(id -u)" != 0 ] && ! sudo -n true 2>/dev/null; then
        echo "ci: slurm: needs root or passwordless sudo (slurmd runs as root)"
        return 1
    fi
    # bounded: a held apt lock or a daemon that never answers must not hold CI up
    out=$(_bpfree_slurm_as_root env BPFREE_SLURM_STATE="${BPFREE_SLURM_STATE:-}" \
          timeout 900 bash "$_BPFREE_SLURM_SCRIPT" start 2>&1)
    grep -v '^SLURM_CONF=' <<<"$out"
    conf=$(sed -n 's/^SLURM_CONF=//p' <<<"$out" | tail -n 1)
    [ -n "$conf" ] || return 1
    # as the user who runs the tests: a job really runs
    if ! out=$(SLURM_CONF="$conf" timeout 60 srun -N1 -t 1 true 2>&1); then
        echo "ci: slurm: the cluster is up but \`srun -N1 true\` failed: $out"
        return 1
    fi
    export SLURM_CONF="$conf" BPFREE_TEST_SLURM=1
    echo "ci: slurm: exported SLURM_CONF=$conf BPFREE_TEST_SLURM=1"
}

if ! _bpfree_slurm_setup; then
    if [ "${BPFREE_REQUIRE_SLURM:-0}" = 1 ]; then
        echo "ci: slurm: required (BPFREE_REQUIRE_SLURM=1) but not available" >&2
        false  # under .ci/run's `set -e` this stops CI
    else
        echo "ci: slurm: not available; the Slurm tests will be skipped"
    fi
fi
