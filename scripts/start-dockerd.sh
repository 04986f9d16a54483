#!/usr/bin/env bash
# Start the Docker engine in the background if it is not already answering.
#
# Idempotent: exits 0 at once when `docker info` works. Otherwise starts
# `dockerd` (detached, logging to $DOCKERD_LOG, default /tmp/dockerd.log) and
# waits up to $DOCKERD_TIMEOUT seconds (default 60) for /var/run/docker.sock
# and `docker info`.
#
# Daemon flags: if $DOCKERD_ARGS is set it is used as is (one attempt).
# Otherwise the defaults are tried first, then fallbacks, each only if the
# previous attempt's dockerd exited:
#   1. (defaults: overlay2 storage driver, iptables on)
#   2. --storage-driver=vfs                 (overlay2 unusable, e.g. nested overlayfs)
#   3. --iptables=false                     (no iptables/nf_tables in this kernel)
#   4. --storage-driver=vfs --iptables=false
#   5. --storage-driver=vfs --iptables=false --bridge=none
# Sandboxes run with `--network none`, which works without iptables or a bridge.
set -euo pipefail

LOG="${DOCKERD_LOG:-/tmp/dockerd.log}"
TIMEOUT="${DOCKERD_TIMEOUT:-60}"
SOCK=/var/run/docker.sock
PIDFILE=/var/run/docker.pid

say() { printf '[start-dockerd] %s\n' "$*" >&2; }
die() {
    say "ERROR: $*"
    if [[ -s "$LOG" ]]; then
        say "last 30 lines of $LOG:"
        tail -n 30 "$LOG" >&2 || true
    fi
    exit 1
}

docker_ok() { timeout 15 docker info >/dev/null 2>&1; }

if ! command -v docker >/dev/null 2>&1; then
    die "the docker client is not installed (apt-get install -y docker.io)"
fi

if docker_ok; then
    say "docker engine already running"
    exit 0
fi

command -v dockerd >/dev/null 2>&1 || die "dockerd is not installed (apt-get install -y docker.io)"
[[ "$(id -u)" == 0 ]] || die "dockerd must be started as root (run this script with sudo)"

start_epoch=$(date +%s)
deadline=$((start_epoch + TIMEOUT))

# Wait for pid (or, if pid is empty, any daemon) until docker answers.
# Returns 0 when ready, 1 if the process exited, 2 on timeout.
wait_ready() {
    local pid="$1"
    while :; do
        if [[ -S "$SOCK" ]] && docker_ok; then
            return 0
        fi
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        if (($(date +%s) >= deadline)); then
            return 2
        fi
        sleep 0.5
    done
}

# A dockerd may already be starting (e.g. launched by a concurrent caller).
if [[ -s "$PIDFILE" ]]; then
    existing="$(cat "$PIDFILE" 2>/dev/null || true)"
    if [[ "$existing" =~ ^[0-9]+$ ]] && kill -0 "$existing" 2>/dev/null &&
        grep -q dockerd "/proc/$existing/comm" 2>/dev/null; then
        say "dockerd (pid $existing) is already running; waiting for it to answer"
        rc=0
        wait_ready "$existing" || rc=$?
        case "$rc" in
            0) say "docker engine ready after $(($(date +%s) - start_epoch)) s"; exit 0 ;;
            1) say "dockerd pid $existing exited; starting a new one" ;;
            *) die "dockerd pid $existing did not answer within ${TIMEOUT} s" ;;
        esac
    fi
fi

# Choose the attempts.
attempts=()
if [[ -n "${DOCKERD_ARGS:-}" ]]; then
    attempts+=("$DOCKERD_ARGS")
else
    # overlay2 cannot sit on top of overlayfs: go straight to vfs there.
    probe=/var/lib/docker
    while [[ ! -e "$probe" ]]; do probe="$(dirname "$probe")"; done
    if [[ "$(stat -fc %T "$probe" 2>/dev/null || true)" == overlayfs ]]; then
        say "$probe is on overlayfs: using the vfs storage driver"
        attempts+=("--storage-driver=vfs" "--storage-driver=vfs --iptables=false"
            "--storage-driver=vfs --iptables=false --bridge=none")
    else
        attempts+=("" "--storage-driver=vfs" "--iptables=false"
            "--storage-driver=vfs --iptables=false"
            "--storage-driver=vfs --iptables=false --bridge=none")
    fi
fi

mkdir -p "$(dirname "$LOG")"
for args in "${attempts[@]}"; do
    if (($(date +%s) >= deadline)); then
        break
    fi
    say "starting dockerd ${args:-(default options)}; log: $LOG"
    printf '\n===== %s start-dockerd: dockerd %s =====\n' "$(date -u +%FT%TZ)" "$args" >>"$LOG"
    # setsid + nohup: the daemon outlives the shell/CI step that started it.
    # shellcheck disable=SC2086  # $args is a list of flags
    setsid nohup dockerd $args </dev/null >>"$LOG" 2>&1 &
    pid=$!
    rc=0
    wait_ready "$pid" || rc=$?
    case "$rc" in
        0)
            say "docker engine ready (dockerd pid $pid${args:+, $args}) after $(($(date +%s) - start_epoch)) s"
            exit 0
            ;;
        1)
            say "dockerd ${args:-(default options)} exited; trying the next fallback"
            ;;
        2)
            die "dockerd (pid $pid${args:+, $args}) is running but did not answer within ${TIMEOUT} s"
            ;;
    esac
done

die "every dockerd attempt exited (tried: $(printf "[%s] " "${attempts[@]}"))"
