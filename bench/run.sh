#!/usr/bin/env bash
# bench/run.sh: docker-filter side by side with no proxy at all and with
# HAProxy configured like the original docker-filter, over one nginx that
# plays the Docker daemon on a unix socket.
#
#   sudo bash bench/run.sh [--quick] [--out FILE] [--no-build] [--no-musl]
#                          [--wait-quiet MINUTES] [--quiet-load LOAD] [--keep]
#                          [--oha PATH]
#
# Run as root on Debian. It installs what is missing (nginx-light, haproxy,
# nghttp2-client, curl, gcc, musl-tools) with apt-get, builds docker-filter
# with `cargo build --release` (and the static musl build when that target
# is installed), writes every configuration it uses into a fresh scratch
# folder under /tmp, and talks to nothing but unix sockets there. Every
# process it starts is stopped by PID when it exits, however it exits.
#
#   --quick             each measure once, small counts: proves the script
#                       works (CI), in well under two minutes after builds
#   --out FILE          where the markdown goes [bench/results.md]
#   --no-build          use the binaries already in target/
#   --no-musl           skip the static musl build and its size
#   --wait-quiet MIN    after building, wait up to MIN minutes for the
#                       1-minute load average to drop below --quiet-load
#                       and the CPUs to be at least 90% idle
#   --quiet-load LOAD   what counts as quiet [0.5]
#   --keep              keep the scratch folder (configs, raw outputs)
#   --oha PATH          also measure 64 keep-alive connections with this oha
#                       binary (a second load generator; not in Debian:
#                       `cargo install oha --locked`)
#
# Measures, for (1) nginx directly, (2) docker-filter, (3) HAProxy:
#   keep-alive requests/s with 1, 16 and 64 connections (h2load --h1);
#   requests/s with a new connection per request, 16 at a time (loadgen);
#   MB/s of one 512 MiB answer (curl);
#   resident memory with no client and with 1,000 idle keep-alive clients;
#   CPU time of the serving process per request;
#   binary size (glibc release build, static musl build);
#   time from start to accepting connections (median of 10).
# Full runs take the median of 3 runs for each rate and the stream; --quick
# runs each measure once with small counts, to show the script works.
#
# It prints one table, writes it as markdown to --out (default
# bench/results.md), and prints the issue's targets as pass or fail. Speed
# never makes it fail: it exits 0 unless a setup step breaks or a proxy
# answers wrongly (a non-200 answer, a short body), which exits 1.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit "${1:-0}"
}

ARGS_TEXT=${*:+ $*}
QUICK=0
BUILD=1
MUSL=1
KEEP=0
OHA=
WAIT_QUIET=0
QUIET_LOAD=0.5
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$REPO/bench/results.md
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) QUICK=1 ;;
        --out) OUT=${2:?--out needs a file}; shift ;;
        --no-build) BUILD=0 ;;
        --no-musl) MUSL=0 ;;
        --keep) KEEP=1 ;;
        --oha) OHA=${2:?--oha needs the path of an oha binary}; shift ;;
        --wait-quiet) WAIT_QUIET=${2:?--wait-quiet needs minutes}; shift ;;
        --quiet-load) QUIET_LOAD=${2:?--quiet-load needs a load average}; shift ;;
        -h|--help) usage 0 ;;
        *) echo "run.sh: unknown argument: $1" >&2; usage 2 >&2 ;;
    esac
    shift
done

say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'run.sh: error: %s\n' "$*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "run as root (it installs packages and raises limits)"

# ---------------------------------------------------------------------------
# How much to measure.
if ((QUICK)); then
    ROUNDS=1 KA_SECS=0.5 KA_WARMUP=1000 NEWCONN_SECS=1 READY_RUNS=1
else
    ROUNDS=3 KA_SECS=3 KA_WARMUP=5000 NEWCONN_SECS=5 READY_RUNS=10
fi
readonly IDLE_CLIENTS=1000
readonly NEWCONN_THREADS=16
readonly STREAM_BYTES=$((512 * 1024 * 1024))
readonly JSON_PATH=/v1.41/containers/json
readonly STREAM_PATH=/v1.41/containers/stream/logs
readonly SETUPS=(direct df haproxy)
readonly MUSL_TARGET=x86_64-unknown-linux-musl

# ---------------------------------------------------------------------------
# Tools.
need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v curl >/dev/null || need+=(curl)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
command -v readelf >/dev/null || need+=(binutils)
((MUSL)) && ! command -v musl-gcc >/dev/null && need+=(musl-tools)
if ((${#need[@]})); then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    if ! apt-get install -y -qq "${need[@]}" >/dev/null; then
        # nginx-light is gone from newer Debian releases; nginx is the same.
        need=("${need[@]/nginx-light/nginx}")
        apt-get install -y -qq "${need[@]}" >/dev/null || die "apt-get install ${need[*]} failed"
    fi
fi
for tool in nginx haproxy h2load curl gcc readelf; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
command -v cargo >/dev/null || die "cargo is not installed (rustup, Rust 1.85 or newer)"
if [[ -n $OHA ]]; then
    [[ -x $OHA ]] || die "--oha $OHA: not an executable file (cargo install oha --locked puts it in ~/.cargo/bin)"
    "$OHA" --version >/dev/null 2>&1 || die "--oha $OHA: \`$OHA --version\` failed"
fi

# ---------------------------------------------------------------------------
# Build.
DF=$REPO/target/release/docker-filter
DF_MUSL=$REPO/target/$MUSL_TARGET/release/docker-filter
MUSL_NOTE="not built"
((MUSL)) || MUSL_NOTE="not built (--no-musl)"
if ((MUSL)) && ! rustup target list --installed 2>/dev/null | grep -qx "$MUSL_TARGET"; then
    rustup target add "$MUSL_TARGET" >/dev/null 2>&1 || MUSL=0 MUSL_NOTE="musl target not installed"
fi
if ((BUILD)); then
    say "cargo build --release"
    (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
    if ((MUSL)); then
        say "cargo build --release --target $MUSL_TARGET"
        if ! (cd "$REPO" && cargo build --release --quiet --target "$MUSL_TARGET"); then
            say "the musl build failed: its size is not measured"
            MUSL=0 MUSL_NOTE="musl build failed"
        fi
    fi
fi
[[ -x $DF ]] || die "no $DF (build it, or drop --no-build)"
((MUSL)) && [[ ! -x $DF_MUSL ]] && MUSL=0
DF_VERSION="$("$DF" --version 2>&1 | head -n1) ($(git -C "$REPO" describe --always --dirty 2>/dev/null || echo 'no git'))"

# ---------------------------------------------------------------------------
# Scratch folder and process bookkeeping.
T=$(mktemp -d /tmp/dfbench.XXXXXX)
chmod 755 "$T" # nginx workers run as nobody and read www/ from here
PIDS=()

# alive PID: running, not merely a zombie waiting to be reaped.
alive() {
    local state
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ -n $state && $state != Z ]]
}

stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        say "$(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-60) (pid $pid) still running 5 s after SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local status=$? pid i
    trap - EXIT
    # Last started, first stopped: the proxies before the nginx behind them.
    for pid in $(printf '%s\n' "${PIDS[@]}" | tac); do
        stop_pid "$pid"
    done
    # nginx workers left behind by a master that had to be killed.
    for pid in ${NGINX_WORKERS:-}; do kill -KILL "$pid" 2>/dev/null || true; done
    if ((KEEP)); then say "kept $T"; else rm -rf "$T"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

forget_pid() {
    local i
    for i in "${!PIDS[@]}"; do [[ ${PIDS[i]} == "$1" ]] && unset 'PIDS[i]'; done
    return 0
}

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(ulimit -n) >= 8192)) || ulimit -n 8192 || die "cannot raise the open file limit to 8192"

# ---------------------------------------------------------------------------
# The load generator and probes (C, built here).
cat >"$T/loadgen.c" <<'EOF'
/*
 * loadgen: the load generator and probes that bench/run.sh compiles in its
 * scratch folder, for what h2load and curl cannot do.
 *
 *   loadgen wait    SOCK TIMEOUT_S
 *       exit 0 as soon as SOCK accepts a connection, 1 after TIMEOUT_S.
 *   loadgen ready   SOCK TIMEOUT_S CMD [ARG]...
 *       remove SOCK, start CMD, connect to SOCK in a tight loop, print the
 *       milliseconds from fork to the first accepted connection, then stop
 *       CMD (SIGTERM, SIGKILL after 3 s) and wait for it.
 *   loadgen newconn SOCK PATH THREADS SECONDS
 *       THREADS threads each connect, send GET PATH, read the whole answer
 *       (by its Content-Length; a chunked answer is an error) and close,
 *       in a loop for SECONDS; print "ok=N errors=N seconds=S rate=R".
 *   loadgen idle    SOCK PATH COUNT READYFILE
 *       open COUNT connections, make one GET PATH on each and read the
 *       answer, leave them open and idle, create READYFILE, then wait for
 *       a signal.
 *
 * Every answer must be a 200; anything else counts as an error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BUF_BYTES (64 * 1024)

static struct sockaddr_un addr;
static socklen_t addr_len;
static char request[1024];
static size_t request_len;

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void set_socket(const char *path)
{
	if (strlen(path) >= sizeof(addr.sun_path)) {
		fprintf(stderr, "loadgen: socket path too long: %s\n", path);
		exit(2);
	}
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	strcpy(addr.sun_path, path);
	addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
}

static void set_request(const char *path)
{
	int n = snprintf(request, sizeof(request),
			 "GET %s HTTP/1.1\r\nHost: localhost\r\nUser-Agent: loadgen\r\n\r\n", path);
	if (n <= 0 || (size_t)n >= sizeof(request)) {
		fprintf(stderr, "loadgen: path too long\n");
		exit(2);
	}
	request_len = (size_t)n;
}

static int dial(void)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&addr, addr_len) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Reads one whole answer on fd into buf (BUF_BYTES); returns its status or -1. */
static int read_answer(int fd, char *buf)
{
	size_t have = 0;
	char *end = NULL;
	while (end == NULL) {
		if (have == BUF_BYTES)
			return -1;
		ssize_t r = read(fd, buf + have, BUF_BYTES - have);
		if (r <= 0)
			return -1;
		have += (size_t)r;
		end = memmem(buf, have, "\r\n\r\n", 4);
	}
	size_t head_len = (size_t)(end + 4 - buf);
	int status = 0;
	if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
		return -1;

	long length = -1;
	int chunked = 0;
	for (char *line = memchr(buf, '\n', head_len); line != NULL && line + 1 < end;
	     line = memchr(line + 1, '\n', (size_t)(end - line - 1))) {
		char *h = line + 1;
		if (strncasecmp(h, "content-length:", 15) == 0)
			length = strtol(h + 15, NULL, 10);
		else if (strncasecmp(h, "transfer-encoding:", 18) == 0)
			chunked = 1;
	}

	size_t body = have - head_len;
	if (length >= 0) {
		while (body < (size_t)length) {
			ssize_t r = read(fd, buf, BUF_BYTES);
			if (r <= 0)
				return -1;
			body += (size_t)r;
		}
	} else if (chunked) {
		return -1; /* nginx sends static files with a length */
	} else {
		for (;;) {
			ssize_t r = read(fd, buf, BUF_BYTES);
			if (r < 0)
				return -1;
			if (r == 0)
				break;
		}
	}
	return status;
}

/* ---- newconn ---- */

static double deadline;
static atomic_long total_ok, total_errors;

static void *newconn_thread(void *unused)
{
	(void)unused;
	char *buf = malloc(BUF_BYTES);
	long ok = 0, errors = 0;
	while (now() < deadline) {
		int fd = dial();
		if (fd < 0) {
			errors++;
			continue;
		}
		if (write_all(fd, request, request_len) == 0 && read_answer(fd, buf) == 200)
			ok++;
		else
			errors++;
		close(fd);
	}
	free(buf);
	atomic_fetch_add(&total_ok, ok);
	atomic_fetch_add(&total_errors, errors);
	return NULL;
}

static int cmd_newconn(int threads, double seconds)
{
	pthread_t *t = calloc((size_t)threads, sizeof(*t));
	double start = now();
	deadline = start + seconds;
	for (int i = 0; i < threads; i++)
		if (pthread_create(&t[i], NULL, newconn_thread, NULL) != 0) {
			perror("loadgen: pthread_create");
			return 1;
		}
	for (int i = 0; i < threads; i++)
		pthread_join(t[i], NULL);
	double took = now() - start;
	long ok = atomic_load(&total_ok), errors = atomic_load(&total_errors);
	printf("ok=%ld errors=%ld seconds=%.3f rate=%.1f\n", ok, errors, took, (double)ok / took);
	return 0;
}

/* ---- idle ---- */

static int cmd_idle(int count, const char *ready_file)
{
	char *buf = malloc(BUF_BYTES);
	int *fds = calloc((size_t)count, sizeof(int));
	for (int i = 0; i < count; i++) {
		fds[i] = dial();
		if (fds[i] < 0) {
			fprintf(stderr, "loadgen: connection %d: %s\n", i, strerror(errno));
			return 1;
		}
		int status = -1;
		if (write_all(fds[i], request, request_len) == 0)
			status = read_answer(fds[i], buf);
		if (status != 200) {
			fprintf(stderr, "loadgen: connection %d: answer %d\n", i, status);
			return 1;
		}
	}
	int fd = open(ready_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		perror("loadgen: ready file");
		return 1;
	}
	close(fd);
	for (;;)
		pause();
}

/* ---- wait and ready ---- */

static int wait_connect(double timeout, pid_t child)
{
	double until = now() + timeout;
	for (;;) {
		int fd = dial();
		if (fd >= 0) {
			close(fd);
			return 0;
		}
		if (now() > until)
			return -1;
		if (child > 0 && waitpid(child, NULL, WNOHANG) == child)
			return -2;
		sched_yield();
	}
}

static void stop(pid_t child)
{
	kill(child, SIGTERM);
	double until = now() + 3.0;
	while (waitpid(child, NULL, WNOHANG) == 0) {
		if (now() > until) {
			kill(child, SIGKILL);
			waitpid(child, NULL, 0);
			return;
		}
		usleep(1000);
	}
}

static int cmd_ready(double timeout, char **argv)
{
	unlink(addr.sun_path);
	double start = now();
	pid_t child = fork();
	if (child < 0) {
		perror("loadgen: fork");
		return 1;
	}
	if (child == 0) {
		/* The proxy must not outlive this probe, however the probe ends. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int null = open("/dev/null", O_RDWR);
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		execvp(argv[0], argv);
		_exit(127);
	}
	int r = wait_connect(timeout, child);
	double took = now() - start;
	if (r == -2) {
		fprintf(stderr, "loadgen: %s exited before accepting connections\n", argv[0]);
		return 1;
	}
	stop(child);
	if (r < 0) {
		fprintf(stderr, "loadgen: %s not ready after %.1f s\n", argv[0], timeout);
		return 1;
	}
	printf("%.3f\n", took * 1000.0);
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: loadgen wait SOCK TIMEOUT_S\n"
			"       loadgen ready SOCK TIMEOUT_S CMD [ARG]...\n"
			"       loadgen newconn SOCK PATH THREADS SECONDS\n"
			"       loadgen idle SOCK PATH COUNT READYFILE\n");
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc < 4)
		usage();
	signal(SIGPIPE, SIG_IGN);
	set_socket(argv[2]);
	if (strcmp(argv[1], "wait") == 0 && argc == 4)
		return wait_connect(atof(argv[3]), 0) == 0 ? 0 : 1;
	if (strcmp(argv[1], "ready") == 0 && argc >= 5)
		return cmd_ready(atof(argv[3]), argv + 4);
	if (strcmp(argv[1], "newconn") == 0 && argc == 6) {
		set_request(argv[3]);
		return cmd_newconn(atoi(argv[4]), atof(argv[5]));
	}
	if (strcmp(argv[1], "idle") == 0 && argc == 6) {
		set_request(argv[3]);
		return cmd_idle(atoi(argv[4]), argv[5]);
	}
	usage();
	return 2;
}
EOF
gcc -O2 -Wall -pthread -o "$T/loadgen" "$T/loadgen.c" || die "cannot compile the load generator"
LOADGEN=$T/loadgen

# ---------------------------------------------------------------------------
# The daemon's stand-in: nginx on a unix socket, a 4 KiB container list and
# a 512 MiB "log stream".
mkdir -p "$T/www" "$T/nginx"

# About 4 KiB of JSON shaped like GET /containers/json from dockerd.
{
    printf '['
    for i in 1 2 3 4; do
        ((i > 1)) && printf ','
        id=$(printf 'container-%d' "$i" | sha256sum | cut -c1-64)
        printf '{"Id":"%s","Names":["/service-%d"],"Image":"registry.example/app-%d:1.%d",' "$id" "$i" "$i" "$i"
        printf '"ImageID":"sha256:%s","Command":"/entrypoint.sh serve --port 80%02d",' "$id" "$i"
        printf '"Created":%d,"Ports":[{"IP":"0.0.0.0","PrivatePort":80%02d,"PublicPort":%d,"Type":"tcp"}],' $((1700000000 + i * 3600)) "$i" $((8000 + i))
        printf '"Labels":{"com.docker.compose.project":"bench","com.docker.compose.service":"service-%d","traefik.enable":"true"},' "$i"
        printf '"State":"running","Status":"Up %d hours","HostConfig":{"NetworkMode":"bench_default"},' $((i * 3))
        printf '"NetworkSettings":{"Networks":{"bench_default":{"IPAMConfig":null,"Links":null,"Aliases":null,'
        printf '"NetworkID":"%s","EndpointID":"%s","Gateway":"172.18.0.1","IPAddress":"172.18.0.%d",' "${id:0:64}" "${id:1:63}0" $((i + 1))
        printf '"IPPrefixLen":16,"MacAddress":"02:42:ac:12:00:%02x"}}},' $((i + 1))
        printf '"Mounts":[{"Type":"volume","Name":"data-%d","Source":"/var/lib/docker/volumes/data-%d/_data",' "$i" "$i"
        printf '"Destination":"/data","Driver":"local","Mode":"z","RW":true,"Propagation":""}]}'
    done
    printf ']\n'
} >"$T/www/containers.json"
JSON_BYTES=$(stat -c %s "$T/www/containers.json")

# The stream: allocated without writing 512 MiB to disk, its first MiB
# written with log lines so that it is not all zeros.
fallocate -l "$STREAM_BYTES" "$T/www/stream.bin" 2>/dev/null || truncate -s "$STREAM_BYTES" "$T/www/stream.bin"
{ yes '2024-01-01T00:00:00.000000000Z level=info msg="request served" status=200 ms=1' || true; } |
    head -c $((1024 * 1024)) | dd of="$T/www/stream.bin" conv=notrunc status=none
chmod 644 "$T/www/"*

cat >"$T/nginx/nginx.conf" <<EOF
# One worker: the daemon stand-in gets at most one of the cores.
worker_processes 1;
daemon off;
pid $T/nginx/nginx.pid;
error_log $T/nginx/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path $T/nginx/body;
    proxy_temp_path $T/nginx/proxy;
    fastcgi_temp_path $T/nginx/fastcgi;
    uwsgi_temp_path $T/nginx/uwsgi;
    scgi_temp_path $T/nginx/scgi;
    sendfile on;
    keepalive_requests 1000000000;
    keepalive_timeout 3600s;
    default_type application/json;
    server {
        listen unix:$T/nginx.sock;
        server_name localhost;
        root $T/www;
        location = $JSON_PATH { try_files /containers.json =404; }
        location = $STREAM_PATH {
            default_type application/vnd.docker.raw-stream;
            try_files /stream.bin =404;
        }
        location / { return 404; }
    }
}
EOF

# ---------------------------------------------------------------------------
# HAProxy as the original docker-filter configured it: mode http, GET only,
# the path against a whitelist file with path_reg -f, unix socket in and
# out, a longer server timeout for the streaming endpoints. maxconn is
# raised from 512 so that 1,000 idle clients are served, not queued.
cat >"$T/url-whitelist.lst" <<'EOF'
^(/v[0-9]+\.[0-9]+)?/_ping$
^(/v[0-9]+\.[0-9]+)?/version$
^(/v[0-9]+\.[0-9]+)?/info$
^(/v[0-9]+\.[0-9]+)?/events$
^(/v[0-9]+\.[0-9]+)?/containers/json$
^(/v[0-9]+\.[0-9]+)?/containers/[a-zA-Z0-9][a-zA-Z0-9_.-]*/json$
^(/v[0-9]+\.[0-9]+)?/containers/[a-zA-Z0-9][a-zA-Z0-9_.-]*/logs$
^(/v[0-9]+\.[0-9]+)?/containers/[a-zA-Z0-9][a-zA-Z0-9_.-]*/stats$
^(/v[0-9]+\.[0-9]+)?/containers/[a-zA-Z0-9][a-zA-Z0-9_.-]*/top$
^(/v[0-9]+\.[0-9]+)?/images/json$
^(/v[0-9]+\.[0-9]+)?/images/[a-zA-Z0-9][a-zA-Z0-9_.:@/-]*/(json|history)$
^(/v[0-9]+\.[0-9]+)?/networks$
^(/v[0-9]+\.[0-9]+)?/networks/[a-zA-Z0-9][a-zA-Z0-9_.-]*$
^(/v[0-9]+\.[0-9]+)?/volumes$
^(/v[0-9]+\.[0-9]+)?/volumes/[a-zA-Z0-9][a-zA-Z0-9_.-]*$
EOF
cat >"$T/long-requests-whitelist.lst" <<'EOF'
^(/v[0-9]+\.[0-9]+)?/events$
^(/v[0-9]+\.[0-9]+)?/containers/[a-zA-Z0-9][a-zA-Z0-9_.-]*/logs$
^(/v[0-9]+\.[0-9]+)?/containers/[a-zA-Z0-9][a-zA-Z0-9_.-]*/stats$
EOF

# haproxy_config BIND_SOCKET STATS_SOCKET
haproxy_config() {
    cat <<EOF
global
    maxconn 4096
    stats socket $2 mode 600 level admin
    stats timeout 2m

defaults
    mode http
    maxconn 4096
    timeout connect 500ms
    timeout client-fin 5000ms
    timeout client 1d
    timeout server 5000ms

frontend http-in
    bind $1 mode 666
    default_backend docker-shortqueries
    acl valid-url path_reg -f $T/url-whitelist.lst
    http-request deny unless METH_GET valid-url
    acl long-requests path_reg -f $T/long-requests-whitelist.lst
    use_backend docker-longqueries if long-requests

backend docker-shortqueries
    server socket $T/nginx.sock

backend docker-longqueries
    server socket $T/nginx.sock
    timeout server 5m
EOF
}
haproxy_config "$T/haproxy.sock" "$T/haproxy-stats.sock" >"$T/haproxy.cfg"
haproxy_config "$T/haproxy-ready.sock" "$T/haproxy-ready-stats.sock" >"$T/haproxy-ready.cfg"
haproxy -c -q -f "$T/haproxy.cfg" || die "HAProxy rejects the configuration"

DF_ARGS=(--upstream "$T/nginx.sock" --max-connections 4096 --socket-mode 0666 --shutdown-timeout 1)

# ---------------------------------------------------------------------------
# Waiting for a quiet machine, if asked.

# idle_pct: how much of the machine was idle over the next 2 seconds. The
# load average lags; this says whether something else is running now.
idle_pct() {
    local a b
    a=$(awk '/^cpu / { print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
    sleep 2
    b=$(awk '/^cpu / { print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2]) }'
}
if ((WAIT_QUIET > 0)); then
    until_quiet=$((SECONDS + WAIT_QUIET * 60))
    while :; do
        load=$(cut -d' ' -f1 /proc/loadavg)
        idle=$(idle_pct)
        awk -v l="$load" -v q="$QUIET_LOAD" -v i="$idle" 'BEGIN { exit !(l < q && i >= 90) }' && break
        ((SECONDS >= until_quiet)) && { say "load $load, ${idle}% idle: not quiet after $WAIT_QUIET min, going on"; break; }
        say "load average $load, ${idle}% idle: waiting for a load below $QUIET_LOAD and 90% idle"
        sleep 30
    done
fi
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
IDLE_BEFORE=$(idle_pct)

# ---------------------------------------------------------------------------
# Start the three setups.
sock_of() {
    case $1 in
        direct) echo "$T/nginx.sock" ;;
        df) echo "$T/df.sock" ;;
        haproxy) echo "$T/haproxy.sock" ;;
    esac
}

say "starting nginx, docker-filter and HAProxy in $T"
nginx -p "$T/nginx" -e "$T/nginx/error.log" -c "$T/nginx/nginx.conf" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
"$LOADGEN" wait "$T/nginx.sock" 10 || die "nginx did not start: $(cat "$T/nginx/error.log")"
NGINX_WORKERS=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')

"$DF" --listen "$T/df.sock" "${DF_ARGS[@]}" 2>"$T/df.log" &
DF_PID=$!
PIDS+=("$DF_PID")
"$LOADGEN" wait "$T/df.sock" 10 || die "docker-filter did not start: $(cat "$T/df.log")"

haproxy -db -f "$T/haproxy.cfg" 2>"$T/haproxy.log" &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")
"$LOADGEN" wait "$T/haproxy.sock" 10 || die "HAProxy did not start: $(cat "$T/haproxy.log")"

# The processes whose memory and CPU count for a setup: nginx for direct,
# the proxy alone for the others.
pids_of() {
    case $1 in
        direct) echo "$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')" ;;
        df) echo "$DF_PID" ;;
        haproxy) echo "$HAPROXY_PID $(pgrep -P "$HAPROXY_PID" | tr '\n' ' ')" ;;
    esac
}

# cpu_ticks PID... : user + system clock ticks, exited threads included.
cpu_ticks() {
    local pid total=0 t
    for pid in "$@"; do
        t=$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }') || t=0
        total=$((total + t))
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

# rss_kb PID... : summed VmRSS in KiB.
rss_kb() {
    local pid total=0 k
    for pid in "$@"; do
        k=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || k=0
        total=$((total + ${k:-0}))
    done
    echo "$total"
}

# ---------------------------------------------------------------------------
# Sanity: every setup serves the list whole, and the proxies filter.
FAILURES=()
fail() { FAILURES+=("$*"); say "FAILURE: $*"; }

for s in "${SETUPS[@]}"; do
    sock=$(sock_of "$s")
    curl -s --unix-socket "$sock" -o "$T/check.json" "http://localhost$JSON_PATH" || die "$s: curl failed"
    cmp -s "$T/check.json" "$T/www/containers.json" || die "$s does not serve $JSON_PATH whole"
    [[ $s == direct ]] && continue
    for probe in "POST /v1.41/containers/create" "GET /v1.41/secrets" "DELETE /v1.41/containers/x"; do
        code=$(curl -s --unix-socket "$sock" -o /dev/null -w '%{http_code}' -X "${probe%% *}" "http://localhost${probe#* }")
        [[ $code == 4* ]] || die "$s lets '$probe' through (HTTP $code): not a fair comparison"
    done
done

# ---------------------------------------------------------------------------
# Results: R[measure:setup] = value; D[...] for diagnostics.
declare -A R D

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ---------------------------------------------------------------------------
# First, while the machine is as quiet as it will be: start-up time of a
# second instance of each proxy on its own socket.
say "start-up time, $READY_RUNS runs each"
ready_ms() { # SETUP SOCK CMD... : sets R[ready:SETUP], the median in ms
    local setup=$1 sock=$2 runs=() i ms
    shift 2
    for ((i = 0; i < READY_RUNS; i++)); do
        ms=$("$LOADGEN" ready "$sock" 5 "$@") || { fail "start-up: $*"; ms=0; }
        runs+=("$ms")
    done
    R[ready:$setup]=$(median "${runs[@]}")
    D[readyruns:$setup]="${runs[*]}"
}
ready_ms df "$T/df-ready.sock" "$DF" --listen "$T/df-ready.sock" "${DF_ARGS[@]}"
ready_ms haproxy "$T/haproxy-ready.sock" haproxy -db -f "$T/haproxy-ready.cfg"
R[ready:direct]=-

# timed OUTFILE CMD... : runs CMD with stdout and stderr to OUTFILE; sets
# BUSY (CPU of CMD as % of one core, from its wall-clock time).
timed() {
    local out=$1 times
    shift
    local TIMEFORMAT='%3R %3U %3S'
    times=$({ time "$@" >"$out" 2>&1; } 2>&1) || true
    BUSY=$(awk '{ printf "%.0f", ($1 > 0) ? 100 * ($2 + $3) / $1 : 0 }' <<<"$times")
}

# h2load_run SETUP CONNS REQUESTS: sets RATE, BUSY and USPR (CPU µs of the
# setup's processes per request); records a failure on any non-2xx answer.
h2load_run() {
    local s=$1 c=$2 n=$3 out=$T/h2load.$1.$2 before after
    local pids
    pids=$(pids_of "$s")
    # shellcheck disable=SC2086
    before=$(cpu_ticks $pids)
    timed "$out" h2load --h1 -B "unix:$(sock_of "$s")" -n "$n" -c "$c" -m 1 "http://localhost$JSON_PATH"
    # shellcheck disable=SC2086
    after=$(cpu_ticks $pids)
    RATE=$(awk '/^finished in/ { print $4 }' "$out")
    local ok codes
    ok=$(awk '/^requests:/ { print $8 }' "$out")
    codes=$(awk '/^status codes:/ { print $3 }' "$out")
    if [[ -z $RATE || $ok != "$n" || $codes != "$n" ]]; then
        fail "$s, $c connections: $n requests, ${ok:-?} succeeded, ${codes:-?} 2xx ($(tr '\n' ' ' <"$out" | cut -c1-300))"
        RATE=0
    fi
    USPR=$(awk -v d=$((after - before)) -v hz="$CLK_TCK" -v n="$n" 'BEGIN { printf "%.1f", d / hz / n * 1e6 }')
}

# ---------------------------------------------------------------------------
CONNS=(1 16 64)
declare -A KA_N
say "keep-alive: calibrating each setup for ${KA_SECS}s runs"
for c in "${CONNS[@]}"; do
    for s in "${SETUPS[@]}"; do
        h2load_run "$s" "$c" "$KA_WARMUP"
        n=$(awk -v r="$RATE" -v t="$KA_SECS" -v c="$c" 'BEGIN { n = int(r * t); if (n < 10 * c) n = 10 * c; if (n < 500) n = 500; print n }')
        KA_N[$s:$c]=$n
    done
done

declare -A KA_RATES KA_BUSY KA_USPR
for ((round = 1; round <= ROUNDS; round++)); do
    for c in "${CONNS[@]}"; do
        for s in "${SETUPS[@]}"; do
            h2load_run "$s" "$c" "${KA_N[$s:$c]}"
            say "keep-alive round $round, $c conn, $s: $RATE req/s (h2load ${BUSY}% of a core, ${USPR} µs CPU/request)"
            KA_RATES[$s:$c]+=" $RATE"
            KA_BUSY[$s:$c]+=" $BUSY"
            KA_USPR[$s:$c]+=" $USPR"
        done
    done
done
for c in "${CONNS[@]}"; do
    for s in "${SETUPS[@]}"; do
        # shellcheck disable=SC2086
        R[ka$c:$s]=$(median ${KA_RATES[$s:$c]})
        # shellcheck disable=SC2086
        D[kabusy$c:$s]=$(median ${KA_BUSY[$s:$c]})
        # shellcheck disable=SC2086
        R[kacpu$c:$s]=$(median ${KA_USPR[$s:$c]})
    done
done

# oha_run SETUP REQUESTS: 64 keep-alive connections with oha; sets RATE and
# BUSY; records a failure unless every answer was a 200.
oha_run() {
    local s=$1 n=$2 out=$T/oha.$1.json codes
    timed "$T/oha.$1.log" "$OHA" --no-tui --output-format json -o "$out" \
        --unix-socket "$(sock_of "$s")" -c 64 -n "$n" "http://localhost$JSON_PATH"
    # The JSON is pretty-printed; flattened, its two fields are one match each.
    RATE=$(tr -d ' \n' <"$out" 2>/dev/null | grep -o '"requestsPerSec":[0-9.]*' | awk -F: '{ printf "%.2f", $2 }' || true)
    codes=$(tr -d ' \n' <"$out" 2>/dev/null | grep -o '"statusCodeDistribution":{[^}]*}' || true)
    if [[ -z $RATE || $codes != "\"statusCodeDistribution\":{\"200\":$n}" ]]; then
        fail "$s, oha, 64 connections: $n requests, answers ${codes:-unknown} ($(tr '\n' ' ' <"$T/oha.$1.log" | cut -c1-300))"
        RATE=0
    fi
}

if [[ -n $OHA ]]; then
    declare -A OHA_RATES OHA_BUSY
    for ((round = 1; round <= ROUNDS; round++)); do
        for s in "${SETUPS[@]}"; do
            oha_run "$s" "${KA_N[$s:64]}"
            say "oha round $round, 64 conn, $s: $RATE req/s (oha ${BUSY}% of a core)"
            OHA_RATES[$s]+=" $RATE"
            OHA_BUSY[$s]+=" $BUSY"
        done
    done
    for s in "${SETUPS[@]}"; do
        # shellcheck disable=SC2086
        R[ka64oha:$s]=$(median ${OHA_RATES[$s]})
        # shellcheck disable=SC2086
        D[ohabusy:$s]=$(median ${OHA_BUSY[$s]})
    done
fi

# ---------------------------------------------------------------------------
say "new connection per request: $NEWCONN_THREADS threads, ${NEWCONN_SECS}s per run"
declare -A NC_RATES NC_BUSY NC_USPR
for ((round = 1; round <= ROUNDS; round++)); do
    for s in "${SETUPS[@]}"; do
        out=$T/newconn.$s
        pids=$(pids_of "$s")
        # shellcheck disable=SC2086
        before=$(cpu_ticks $pids)
        timed "$out" "$LOADGEN" newconn "$(sock_of "$s")" "$JSON_PATH" "$NEWCONN_THREADS" "$NEWCONN_SECS"
        # shellcheck disable=SC2086
        after=$(cpu_ticks $pids)
        rate=$(sed -n 's/.* rate=\([0-9.]*\).*/\1/p' "$out")
        okn=$(sed -n 's/^ok=\([0-9]*\).*/\1/p' "$out")
        errors=$(sed -n 's/.* errors=\([0-9]*\).*/\1/p' "$out")
        if [[ -z $rate || ${errors:-1} != 0 ]]; then
            fail "$s, new connection per request: ${errors:-?} errors ($(tr '\n' ' ' <"$out" | cut -c1-300))"
            rate=${rate:-0}
        fi
        uspr=$(awk -v d=$((after - before)) -v hz="$CLK_TCK" -v n="${okn:-0}" 'BEGIN { printf "%.1f", n ? d / hz / n * 1e6 : 0 }')
        say "new connection round $round, $s: $rate req/s (loadgen ${BUSY}% of a core, $uspr µs CPU/request)"
        NC_RATES[$s]+=" $rate"
        NC_BUSY[$s]+=" $BUSY"
        NC_USPR[$s]+=" $uspr"
    done
done
for s in "${SETUPS[@]}"; do
    # shellcheck disable=SC2086
    R[newconn:$s]=$(median ${NC_RATES[$s]})
    # shellcheck disable=SC2086
    D[ncbusy:$s]=$(median ${NC_BUSY[$s]})
    # shellcheck disable=SC2086
    R[nccpu:$s]=$(median ${NC_USPR[$s]})
done

# ---------------------------------------------------------------------------
say "streaming $((STREAM_BYTES >> 20)) MiB"
curl -s --unix-socket "$T/nginx.sock" -o /dev/null "http://localhost$STREAM_PATH" # into the page cache
declare -A ST_SPEEDS ST_BUSY
for ((round = 1; round <= ROUNDS; round++)); do
    for s in "${SETUPS[@]}"; do
        out=$T/stream.$s
        timed "$out" curl -s --unix-socket "$(sock_of "$s")" -o /dev/null \
            -w '%{http_code} %{size_download} %{speed_download}\n' "http://localhost$STREAM_PATH"
        read -r code size speed <"$out" || true
        if [[ $code != 200 || $size != "$STREAM_BYTES" ]]; then
            fail "$s, stream: HTTP ${code:-?}, ${size:-?} of $STREAM_BYTES bytes"
            speed=0
        fi
        mbs=$(awk -v b="$speed" 'BEGIN { printf "%.0f", b / 1e6 }')
        say "stream round $round, $s: $mbs MB/s (curl ${BUSY}% of a core)"
        ST_SPEEDS[$s]+=" $mbs"
        ST_BUSY[$s]+=" $BUSY"
    done
done
for s in "${SETUPS[@]}"; do
    # shellcheck disable=SC2086
    R[stream:$s]=$(median ${ST_SPEEDS[$s]})
    # shellcheck disable=SC2086
    D[stbusy:$s]=$(median ${ST_BUSY[$s]})
done

# ---------------------------------------------------------------------------
# Memory with 1,000 idle keep-alive clients, each after one request,
# measured twice: after all the load tests (what a long-running proxy looks
# like), then on freshly restarted proxies that have served nothing else.
idle_rss() { # SETUP KEY
    local s=$1 key=$2 ready=$T/idle.ready lpid i
    rm -f "$ready"
    # shellcheck disable=SC2046
    R[rss0$key:$s]=$(rss_kb $(pids_of "$s"))
    "$LOADGEN" idle "$(sock_of "$s")" "$JSON_PATH" "$IDLE_CLIENTS" "$ready" 2>"$T/idle.log" &
    lpid=$!
    PIDS+=("$lpid")
    for ((i = 0; i < 600; i++)); do
        [[ -e $ready ]] && break
        alive "$lpid" || break
        sleep 0.1
    done
    if [[ -e $ready ]]; then
        sleep 1 # let every connection settle into its idle wait
        # shellcheck disable=SC2046
        R[rss$key:$s]=$(rss_kb $(pids_of "$s"))
    else
        fail "$s: could not hold $IDLE_CLIENTS idle clients: $(cat "$T/idle.log")"
        R[rss$key:$s]=0
    fi
    stop_pid "$lpid"
    forget_pid "$lpid"
    sleep 1 # let the setup close them before the next measure
}

# The fresh measurement needs fresh processes: restart the two proxies.
restart_proxies() {
    stop_pid "$DF_PID"
    forget_pid "$DF_PID"
    "$DF" --listen "$T/df.sock" "${DF_ARGS[@]}" 2>>"$T/df.log" &
    DF_PID=$!
    PIDS+=("$DF_PID")
    "$LOADGEN" wait "$T/df.sock" 10 || die "docker-filter did not restart: $(cat "$T/df.log")"
    stop_pid "$HAPROXY_PID"
    forget_pid "$HAPROXY_PID"
    haproxy -db -f "$T/haproxy.cfg" 2>>"$T/haproxy.log" &
    HAPROXY_PID=$!
    PIDS+=("$HAPROXY_PID")
    "$LOADGEN" wait "$T/haproxy.sock" 10 || die "HAProxy did not restart: $(cat "$T/haproxy.log")"
}

say "memory with $IDLE_CLIENTS idle clients, after the load tests"
for s in "${SETUPS[@]}"; do idle_rss "$s" load; done
say "memory with $IDLE_CLIENTS idle clients, freshly started proxies"
restart_proxies
for s in "${SETUPS[@]}"; do idle_rss "$s" fresh; done

# ---------------------------------------------------------------------------
# Binary sizes.
linkage() { if readelf -l "$1" 2>/dev/null | grep -q 'Requesting program interpreter'; then echo dynamic; else echo static; fi; }
HAPROXY_BIN=$(command -v haproxy)
R[bin:direct]=-
R[bin:df]=$(stat -c %s "$DF")
R[bin:haproxy]=$(stat -L -c %s "$HAPROXY_BIN")
D[binlink:df]=$(linkage "$DF")
D[binlink:haproxy]=$(linkage "$(readlink -f "$HAPROXY_BIN")")
R[musl:direct]=- R[musl:haproxy]=-
if ((MUSL)); then
    R[musl:df]=$(stat -c %s "$DF_MUSL")
    D[binlink:musl]=$(linkage "$DF_MUSL")
else
    R[musl:df]=-
    D[binlink:musl]=$MUSL_NOTE
fi

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
IDLE_AFTER=$(idle_pct)

# ---------------------------------------------------------------------------
# The table. Each row: key, label, format, whether direct is comparable.
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k * 1024 / 1e6 }'; }
for key in rss0load rssload rss0fresh rssfresh; do
    for s in "${SETUPS[@]}"; do R[$key:$s]=$(mb "${R[$key:$s]}"); done
done

ROWS=(
    "ka1|keep-alive req/s, 1 connection|%.0f|1"
    "ka16|keep-alive req/s, 16 connections|%.0f|1"
    "ka64|keep-alive req/s, 64 connections|%.0f|1"
    "newconn|new connection per request, req/s, 16 at a time|%.0f|1"
    "stream|512 MiB stream, MB/s|%.0f|1"
    "rssfresh|RSS MB, 1,000 idle clients, fresh process|%.1f|0"
    "rssload|RSS MB, 1,000 idle clients, after the load tests|%.1f|0"
    "rss0fresh|RSS MB, no client, fresh process|%.1f|0"
    "kacpu1|CPU µs per request, keep-alive, 1 connection|%.1f|0"
    "kacpu64|CPU µs per request, keep-alive, 64 connections|%.1f|0"
    "nccpu|CPU µs per request, new connection per request|%.1f|0"
    "bin|binary bytes, release build (${D[binlink:df]}; HAProxy ${D[binlink:haproxy]})|%.0f|0"
    "musl|binary bytes, static musl build (${D[binlink:musl]})|%.0f|0"
    "ready|start to accepting connections, ms, median of $READY_RUNS|%.2f|0"
)
if [[ -n $OHA ]]; then
    ROWS=("${ROWS[@]:0:3}" "ka64oha|keep-alive req/s, 64 connections, oha|%.0f|1" "${ROWS[@]:3}")
fi

fmt() { [[ $2 == - || -z $2 ]] && { echo -; return; }; awk -v f="$1" -v v="$2" 'BEGIN { printf f, v }'; }
ratio() { # A B
    [[ $1 == - || $2 == - || -z $1 || -z $2 ]] && { echo -; return; }
    awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2fx", a / b }'
}

TABLE=$T/table.tsv
{
    printf 'measure\tdirect (nginx)\tdocker-filter\thaproxy\tdocker-filter/direct\thaproxy/direct\tdocker-filter/haproxy\n'
    for row in "${ROWS[@]}"; do
        IFS='|' read -r key label f comparable <<<"$row"
        d=${R[$key:direct]} p=${R[$key:df]} h=${R[$key:haproxy]}
        if ((comparable)); then pd=$(ratio "$p" "$d") hd=$(ratio "$h" "$d"); else pd=- hd=-; fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$(fmt "$f" "$d")" "$(fmt "$f" "$p")" \
            "$(fmt "$f" "$h")" "$pd" "$hd" "$(ratio "$p" "$h")"
    done
} >"$TABLE"

# Targets from the issue.
TARGETS=$T/targets.tsv
pass() { awk "BEGIN { exit !($1) }" && echo pass || echo FAIL; }
{
    for c in 1 16 64; do
        printf 'keep-alive rate, %s connection(s), at least HAProxy'"'"'s\t%s\t%s vs %s req/s\n' "$c" \
            "$(pass "${R[ka$c:df]} >= ${R[ka$c:haproxy]}")" "$(fmt %.0f "${R[ka$c:df]}")" "$(fmt %.0f "${R[ka$c:haproxy]}")"
    done
    if [[ -n $OHA ]]; then
        printf 'keep-alive rate, 64 connection(s) with oha, at least HAProxy'"'"'s\t%s\t%s vs %s req/s\n' \
            "$(pass "${R[ka64oha:df]} >= ${R[ka64oha:haproxy]}")" "$(fmt %.0f "${R[ka64oha:df]}")" "$(fmt %.0f "${R[ka64oha:haproxy]}")"
    fi
    printf 'new connection per request rate, at least HAProxy'"'"'s\t%s\t%s vs %s req/s\n' \
        "$(pass "${R[newconn:df]} >= ${R[newconn:haproxy]}")" "$(fmt %.0f "${R[newconn:df]}")" "$(fmt %.0f "${R[newconn:haproxy]}")"
    printf 'streaming at least 0.9x the fastest relay\t%s\t%s vs %s MB/s (HAProxy)\n' \
        "$(pass "${R[stream:df]} >= 0.9 * ${R[stream:haproxy]}")" "${R[stream:df]}" "${R[stream:haproxy]}"
    worst=$(awk -v a="${R[rssfresh:df]}" -v b="${R[rssload:df]}" 'BEGIN { m = (a > b) ? a : b; print m }')
    printf 'at most 24 MB RSS with 1,000 idle clients (the worse of fresh and after load)\t%s\t%s MB\n' \
        "$(pass "$worst <= 24")" "$worst"
    if [[ ${R[musl:df]} != - ]]; then
        printf 'static release binary at most 2 MB (2,000,000 bytes)\t%s\t%s bytes (%s)\n' \
            "$(pass "${R[musl:df]} <= 2000000 && \"${D[binlink:musl]}\" == \"static\"")" "${R[musl:df]}" "${D[binlink:musl]}"
    else
        printf 'static release binary at most 2 MB (2,000,000 bytes)\tnot measured\t%s\n' "$MUSL_NOTE"
    fi
    printf 'ready in at most 10 ms\t%s\t%s ms\n' "$(pass "${R[ready:df]} <= 10")" "$(fmt %.2f "${R[ready:df]}")"
} >"$TARGETS"

# Diagnostics: how busy the load generators were (a load generator near
# 100% of one core is measuring itself, not the setup behind it).
DIAG=$T/diag.tsv
{
    printf 'load generator CPU, %% of one core\tdirect\tdocker-filter\thaproxy\n'
    for c in 1 16 64; do
        printf 'h2load, keep-alive, %s connection(s)\t%s\t%s\t%s\n' "$c" "${D[kabusy$c:direct]}" "${D[kabusy$c:df]}" "${D[kabusy$c:haproxy]}"
    done
    [[ -z $OHA ]] || printf 'oha, keep-alive, 64 connection(s)\t%s\t%s\t%s\n' "${D[ohabusy:direct]}" "${D[ohabusy:df]}" "${D[ohabusy:haproxy]}"
    printf 'loadgen, new connection per request (%s threads)\t%s\t%s\t%s\n' "$NEWCONN_THREADS" "${D[ncbusy:direct]}" "${D[ncbusy:df]}" "${D[ncbusy:haproxy]}"
    printf 'curl, 512 MiB stream\t%s\t%s\t%s\n' "${D[stbusy:direct]}" "${D[stbusy:df]}" "${D[stbusy:haproxy]}"
} >"$DIAG"
READY_RUNS_TEXT="start-up runs, ms: docker-filter ${D[readyruns:df]}; HAProxy ${D[readyruns:haproxy]}"

print_text() { # TSV
    awk -F'\t' '
        { for (i = 1; i <= NF; i++) { cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) } if (NF > nf) nf = NF }
        END {
            for (r = 1; r <= NR; r++) {
                line = ""
                for (i = 1; i <= nf; i++) line = line sprintf(i == 1 ? "%-*s" : "  %*s", w[i], cell[r, i])
                print line
                if (r == 1) { line = ""; for (i = 1; i <= nf; i++) { s = sprintf("%*s", w[i], ""); gsub(/ /, "-", s); line = line (i == 1 ? "" : "  ") s } print line }
            }
        }' "$1"
}
print_md() { # TSV
    awk -F'\t' '
        { line = "|"; for (i = 1; i <= NF; i++) line = line " " $i " |"; print line
          if (NR == 1) { line = "|"; for (i = 1; i <= NF; i++) line = line (i == 1 ? " --- |" : " ---: |"); print line } }' "$1"
}

MODE=full
((QUICK)) && MODE="quick (--quick: one run each, small counts; not for comparison)"
echo
echo "docker-filter benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), mode: $MODE"
echo "docker-filter $DF_VERSION; load average before $LOAD_BEFORE, after $LOAD_AFTER; CPU idle before ${IDLE_BEFORE}%, after ${IDLE_AFTER}%"
echo
print_text "$TABLE"
echo
printf 'target\tresult\tmeasured\n' | cat - "$TARGETS" >"$T/targets-head.tsv"
print_text "$T/targets-head.tsv"
echo
print_text "$DIAG"
echo "$READY_RUNS_TEXT"

mkdir -p "$(dirname "$OUT")"
{
    echo "# docker-filter benchmark results"
    echo
    echo "- date: $(date -u)"
    echo "- mode: $MODE"
    echo "- command: \`bash bench/run.sh$ARGS_TEXT\`"
    echo "- docker-filter: $DF_VERSION"
    echo "- machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
    echo "- tools: $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(haproxy -v | head -n1 | awk '{ print $1, $2, $3 }'), $(h2load --version | head -n1), $(curl --version | head -n1 | awk '{ print $1, $2 }'),${OHA:+ $("$OHA" --version | head -n1),} $(rustc --version)"
    echo "- load average (1, 5, 15 min): before $LOAD_BEFORE, after $LOAD_AFTER"
    echo "- CPU idle over 2 s (all CPUs; what other work left free): before ${IDLE_BEFORE}%, after ${IDLE_AFTER}%"
    echo "- upstream: nginx, 1 worker, $JSON_BYTES-byte JSON at $JSON_PATH, $((STREAM_BYTES >> 20)) MiB at $STREAM_PATH"
    echo "- rates and the stream are the median of $ROUNDS run(s); keep-alive runs are about ${KA_SECS}s each, new-connection runs ${NEWCONN_SECS}s"
    echo
    print_md "$TABLE"
    echo
    echo "MB = 10^6 bytes. RSS and CPU are the serving processes' own: nginx for direct, the proxy alone for the others."
    echo
    echo "## Targets"
    echo
    print_md "$T/targets-head.tsv"
    echo
    echo "## Load generators"
    echo
    print_md "$DIAG"
    echo
    echo "A load generator near 100% of one core is the bottleneck of its run, not the setup behind it."
    echo
    echo "$READY_RUNS_TEXT"
} >"$OUT"
say "markdown written to $OUT"

if ((${#FAILURES[@]})); then
    printf 'run.sh: %d measurement(s) saw wrong answers:\n' "${#FAILURES[@]}" >&2
    printf '  %s\n' "${FAILURES[@]}" >&2
    exit 1
fi
exit 0
