#!/usr/bin/env bash
# A private Docker daemon for the end-to-end tests, with known contents.
#
#   tests/e2e/dockerd.sh start DIR   start dockerd in DIR (created if needed),
#                                    seed it, print its socket path on stdout
#   tests/e2e/dockerd.sh seed SOCKET seed an already running daemon
#   tests/e2e/dockerd.sh stop DIR    stop the dockerd started in DIR, by PID
#
# The daemon has no network at all (no bridge, no iptables) and can pull
# nothing: the only image is built with `docker import` from the host's
# static busybox. What the seed step leaves on the daemon, and what the
# tests rely on:
#
#   image      busybox:e2e
#   container  e2e-web_1, running, env E2E_GREETING=hello, prints "tick"
#              once a second, the volume mounted at /data, a health check
#              every 2 s (so the daemon emits events all the time)
#   volume     e2e-data
#
# `start` and `seed` are idempotent: a daemon already answering on DIR's
# socket is reused and missing fixtures are added. Progress goes to stderr;
# stdout carries only the socket path. Everything it runs is logged in
# DIR/dockerd.log (the daemon) and on stderr (this script).
#
# Environment: DOCKER (the CLI to use; default /usr/local/bin/docker when it
# exists, else `docker` on PATH), DOCKERD (default `dockerd` on PATH),
# E2E_START_TIMEOUT (seconds to wait for the daemon, default 60).
set -euo pipefail

readonly IMAGE=busybox:e2e
readonly CONTAINER=e2e-web_1
readonly VOLUME=e2e-data

log() { printf 'dockerd.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

docker_cli() {
    if [[ -n "${DOCKER:-}" ]]; then
        printf '%s\n' "$DOCKER"
    elif [[ -x /usr/local/bin/docker ]]; then
        printf '%s\n' /usr/local/bin/docker
    else
        command -v docker || die "no docker CLI found (install docker.io)"
    fi
}

# `docker` against one socket, with a private CLI configuration so that
# the user's contexts and credentials play no part.
dk() {
    env -u DOCKER_CONTEXT -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH \
        -u DOCKER_API_VERSION DOCKER_CONFIG="$CLI_CONFIG" \
        "$CLI" -H "unix://$SOCKET" "$@"
}

# The socket path must fit in sun_path (108 bytes with the NUL).
check_socket_path() {
    (( ${#1} < 100 )) || die "socket path too long for a unix socket: $1"
}

daemon_answers() {
    timeout 10 env -u DOCKER_CONTEXT DOCKER_CONFIG="$CLI_CONFIG" \
        "$CLI" -H "unix://$SOCKET" version >/dev/null 2>&1
}

# The dockerd started in $DIR, if its PID file names a live dockerd.
running_pid() {
    local pid
    [[ -s "$DIR/dockerd.pid" ]] || return 1
    pid=$(<"$DIR/dockerd.pid")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]] || return 1
    printf '%s\n' "$pid"
}

start_daemon() {
    local dockerd pid waited=0 limit=${E2E_START_TIMEOUT:-60}
    dockerd=${DOCKERD:-$(command -v dockerd || true)}
    [[ -n "$dockerd" ]] || die "dockerd not found (apt-get install docker.io)"

    if running_pid >/dev/null && daemon_answers; then
        log "reusing dockerd pid $(running_pid) on $SOCKET"
        return
    fi
    rm -f "$SOCKET" "$DIR/dockerd.pid"

    # dockerd needs the cgroup hierarchies; a machine without an init
    # system may not have mounted them.
    if ! grep -q ' cgroup2\? ' /proc/mounts && command -v cgroupfs-mount >/dev/null; then
        log "no cgroup file system mounted: running cgroupfs-mount"
        cgroupfs-mount
    fi

    log "starting $dockerd in $DIR (log: $DIR/dockerd.log)"
    setsid "$dockerd" \
        -H "unix://$SOCKET" \
        --data-root "$DIR/root" \
        --exec-root "$DIR/exec" \
        --pidfile "$DIR/dockerd.pid" \
        --iptables=false --ip6tables=false \
        --ip-forward=false --ip-masq=false \
        --bridge=none \
        --storage-driver=vfs \
        --default-ulimit nofile=20000:20000 \
        </dev/null >>"$DIR/dockerd.log" 2>&1 &
    pid=$!
    # Until dockerd writes its PID file, remember the PID we started.
    printf '%s\n' "$pid" >"$DIR/dockerd.pid.start"

    until daemon_answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$DIR/dockerd.log" >&2 || true
            die "dockerd exited during start-up"
        fi
        (( waited++ < limit )) || {
            tail -n 30 "$DIR/dockerd.log" >&2 || true
            die "dockerd did not answer within ${limit}s"
        }
        sleep 1
    done
    log "dockerd pid $pid answers on $SOCKET"
}

build_image() {
    local busybox ctx applet
    if dk image inspect "$IMAGE" >/dev/null 2>&1; then
        return
    fi
    busybox=${E2E_BUSYBOX:-/bin/busybox}
    [[ -x "$busybox" ]] || die "$busybox missing (apt-get install busybox-static)"

    ctx=$(mktemp -d)
    mkdir -p "$ctx/bin" "$ctx/tmp" "$ctx/data" "$ctx/etc"
    cp "$busybox" "$ctx/bin/busybox"
    # Every applet as a link, so that `sleep`, `cat` ... resolve on PATH.
    for applet in $("$ctx/bin/busybox" --list); do
        [[ "$applet" == busybox ]] || ln -sf busybox "$ctx/bin/$applet"
    done
    printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' \
        >"$ctx/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$ctx/etc/group"
    printf 'e2e fixture file\n' >"$ctx/etc/e2e-secret.txt"
    tar -C "$ctx" -cf "$ctx.tar" .
    dk import \
        --change 'ENV PATH=/bin' \
        --change 'CMD ["/bin/sh"]' \
        "$ctx.tar" "$IMAGE" >/dev/null
    rm -rf "$ctx" "$ctx.tar"
    log "built image $IMAGE"
}

seed() {
    build_image

    if ! dk volume inspect "$VOLUME" >/dev/null 2>&1; then
        dk volume create --label e2e=1 "$VOLUME" >/dev/null
        log "created volume $VOLUME"
    fi

    case "$(dk inspect -f '{{.State.Running}}' "$CONTAINER" 2>/dev/null || true)" in
        true) ;;
        false)
            dk start "$CONTAINER" >/dev/null
            log "restarted container $CONTAINER"
            ;;
        *)
            # The trap makes `docker stop` quick: PID 1 ignores SIGTERM
            # unless it installs a handler. The health check gives the
            # daemon's event stream something to say every two seconds
            # (exec_create, exec_start, exec_die) without anyone changing
            # anything, so that the tests can see events being relayed.
            dk run -d --name "$CONTAINER" --network none \
                --label e2e=1 \
                -e E2E_GREETING=hello \
                --health-cmd true --health-interval 2s \
                --health-timeout 2s --health-retries 3 \
                -v "$VOLUME:/data" \
                "$IMAGE" \
                sh -c 'trap "exit 0" TERM; while true; do echo tick; sleep 1; done' \
                >/dev/null
            log "started container $CONTAINER"
            ;;
    esac

    # The container must have logged something before the tests read logs.
    for _ in $(seq 1 20); do
        if dk logs "$CONTAINER" 2>/dev/null | grep -q tick; then
            return
        fi
        sleep 0.5
    done
    die "container $CONTAINER logs nothing"
}

stop_daemon() {
    local pid
    pid=$(running_pid || true)
    if [[ -z "$pid" && -s "$DIR/dockerd.pid.start" ]]; then
        pid=$(<"$DIR/dockerd.pid.start")
        kill -0 "$pid" 2>/dev/null || pid=
    fi
    if [[ -z "$pid" ]]; then
        log "no dockerd running in $DIR"
        rm -f "$DIR/dockerd.pid.start"
        return
    fi

    # Stop the containers first so that dockerd's own shutdown is quick.
    if [[ -S "$SOCKET" ]]; then
        local ids
        ids=$(timeout 10 env DOCKER_CONFIG="$CLI_CONFIG" \
            "$CLI" -H "unix://$SOCKET" ps -q 2>/dev/null || true)
        if [[ -n "$ids" ]]; then
            # shellcheck disable=SC2086 # one word per container ID
            timeout 20 env DOCKER_CONFIG="$CLI_CONFIG" \
                "$CLI" -H "unix://$SOCKET" stop -t 2 $ids >/dev/null 2>&1 || true
        fi
    fi

    log "stopping dockerd pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "dockerd pid $pid still running after 30s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$DIR/dockerd.pid.start"
}

main() {
    local cmd=${1:-} arg=${2:-}
    [[ -n "$cmd" && -n "$arg" ]] || {
        sed -n '2,9p' "$0" >&2
        exit 2
    }
    CLI=$(docker_cli)

    case "$cmd" in
        start | stop)
            mkdir -p "$arg"
            DIR=$(cd "$arg" && pwd)
            SOCKET=$DIR/docker.sock
            ;;
        seed)
            DIR=$(mktemp -d)
            SOCKET=$arg
            ;;
        *) die "unknown command: $cmd" ;;
    esac
    CLI_CONFIG=$DIR/cli-config
    mkdir -p "$CLI_CONFIG"
    check_socket_path "$SOCKET"

    case "$cmd" in
        start)
            log "docker CLI: $CLI ($("$CLI" --version))"
            start_daemon
            seed
            printf '%s\n' "$SOCKET"
            ;;
        seed)
            seed
            rm -rf "$DIR"
            printf '%s\n' "$SOCKET"
            ;;
        stop) stop_daemon ;;
    esac
}

main "$@"
