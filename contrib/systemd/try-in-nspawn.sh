#!/usr/bin/env bash
# Boots systemd in a throw-away systemd-nspawn container built from this
# host's /usr, installs docker-filter.socket and docker-filter.service there
# unchanged, and checks that they really work: socket activation, the
# dynamic user, the docker group, the sandbox (seccomp
# filter, no capabilities, no network), Type=notify, the metrics socket,
# a --whitelist drop-in, and a clean stop on SIGTERM and SIGHUP.
#
#   sudo contrib/systemd/try-in-nspawn.sh [BINARY]
#
# BINARY defaults to target/release/docker-filter, then target/debug/.
# Needs root, systemd-nspawn (Debian: systemd-container; or set NSPAWN to a
# systemd-nspawn binary), python3 (the fake Docker daemon), curl, setpriv
# and chrt. Nothing on the host is changed: the container gets a copy of
# /etc, a read-only /usr and its own /run, and everything is removed at the
# end. Exit status 0 when every check passed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
binary=${1:-}
if [[ -z "$binary" ]]; then
    for candidate in "$root/target/release/docker-filter" "$root/target/debug/docker-filter"; do
        [[ -x "$candidate" ]] && binary=$candidate && break
    done
fi
[[ -x "$binary" ]] || { echo "no docker-filter binary; build one or pass its path" >&2; exit 2; }
nspawn=${NSPAWN:-$(command -v systemd-nspawn || true)}
[[ -x "$nspawn" ]] || { echo "systemd-nspawn not found (Debian package systemd-container, or NSPAWN=)" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "run as root" >&2; exit 2; }
docker_gid=$(getent group docker | cut -d: -f3 || true)

work=$(mktemp -d /tmp/df-nspawn.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs"/{dev,proc,sys,run,tmp,usr/lib,root,box,results,etc,var/lib,var/log,var/tmp} \
    "$work/bin" "$work/units"/{sockets.target.wants,multi-user.target.wants}
for link in bin lib lib64 sbin; do
    [[ -L /$link ]] && ln -s "$(readlink "/$link")" "$rootfs/$link"
done
ln -s ../run "$rootfs/var/run"
cp -a /etc/. "$rootfs/etc/"
cp /usr/lib/os-release "$rootfs/usr/lib/os-release"
rm -rf "$rootfs/etc/systemd/system" "$rootfs/etc/machine-id"
: >"$rootfs/etc/fstab"
# The groups the units expect: docker (the Docker socket's) and
# docker-filter (the clients').
if [[ -z "$docker_gid" ]]; then
    docker_gid=989
    echo "docker:x:$docker_gid:" >>"$rootfs/etc/group"
fi
grep -q '^docker-filter:' "$rootfs/etc/group" || echo 'docker-filter:x:990:' >>"$rootfs/etc/group"
client_gid=$(grep '^docker-filter:' "$rootfs/etc/group" | cut -d: -f3)
mkdir -p "$rootfs/etc/docker-filter"
printf '# only ping\n^(/v[0-9]+\\.[0-9]+)?/_ping$\n' >"$rootfs/etc/docker-filter/whitelist.lst"
chmod 0644 "$rootfs/etc/docker-filter/whitelist.lst"

cp "$binary" "$work/bin/docker-filter"
cp "$here/docker-filter.socket" "$here/docker-filter.service" "$work/units/"
ln -s ../docker-filter.socket "$work/units/sockets.target.wants/"
ln -s ../df-check.service "$work/units/multi-user.target.wants/"
ln -s /usr/lib/systemd/system/multi-user.target "$work/units/default.target"

cat >"$rootfs/box/fake-dockerd.py" <<EOF
import os, socket, sys, threading
path = "/run/docker.sock"
server = socket.socket(socket.AF_UNIX)
server.bind(path)
os.chown(path, -1, $docker_gid)
os.chmod(path, 0o660)
server.listen(16)
def serve(conn):
    buf = b""
    while True:
        data = conn.recv(4096)
        if not data:
            break
        buf += data
        while b"\r\n\r\n" in buf:
            head, buf = buf.split(b"\r\n\r\n", 1)
            print(head.split(b"\r\n")[0].decode(), flush=True)
            body = b'{"fake":"dockerd"}'
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body)
    conn.close()
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
EOF
cat >"$work/units/fake-dockerd.service" <<'EOF'
[Service]
ExecStart=/usr/bin/python3 /box/fake-dockerd.py
EOF
cat >"$work/units/df-check.service" <<'EOF'
[Unit]
After=docker-filter.socket fake-dockerd.service
Wants=fake-dockerd.service
[Service]
Type=oneshot
ExecStart=/bin/bash /box/check.sh
StandardOutput=file:/results/check.log
StandardError=inherit
ExecStopPost=/bin/systemctl poweroff --no-block
EOF
cat >"$rootfs/box/check.sh" <<EOF
#!/bin/bash
exec 2>&1
failures=0
check() { if eval "\$2"; then echo "ok: \$1"; else echo "FAIL: \$1"; failures=\$((failures + 1)); fi; }
# The status of a request through the safe socket, as a member of the
# docker-filter group (uid nobody) or as nobody alone.
client_get() {
    setpriv --reuid=65534 --regid=$client_gid --clear-groups \
        curl -s -o /dev/null -w '%{http_code}' --unix-socket /run/docker-filter/docker.sock "\$@"
}
other_get() {
    setpriv --reuid=65534 --regid=65534 --clear-groups \
        curl -s -o /dev/null -w '%{http_code}' --unix-socket /run/docker-filter/docker.sock "\$@"
}
unit() { systemctl show docker-filter.service -p "\$1" --value; }
for _ in \$(seq 100); do [[ -S /run/docker.sock ]] && break; sleep 0.1; done

check "socket unit listening" '[[ \$(systemctl show docker-filter.socket -p SubState --value) == listening ]]'
check "safe socket root:docker-filter 0660" '[[ \$(stat -c "%U:%G %a" /run/docker-filter/docker.sock) == "root:docker-filter 660" ]]'
check "service not started before the first client" '[[ \$(unit SubState) == dead ]]'
check "a docker-filter member reads /_ping" '[[ \$(client_get http://docker/_ping) == 200 ]]'
check "service started by the connection" '[[ \$(unit SubState) == running ]]'
check "POST refused with 403" '[[ \$(client_get -X POST http://docker/containers/create) == 403 ]]'
check "others cannot connect" '[[ \$(other_get http://docker/_ping) == 000 ]]'
pid=\$(unit MainPID)
[[ -n \$pid && \$pid != 0 ]] || pid=nonexistent
grep -E '^(Uid|Gid|Groups|CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/\$pid/status
check "dynamic user, not root" '[[ \$(stat -c %u /proc/\$pid) != 0 ]]'
check "no capabilities" 'grep -q "^CapEff:\s*0000000000000000" /proc/\$pid/status && grep -q "^CapBnd:\s*0000000000000000" /proc/\$pid/status'
check "seccomp filter on" 'grep -q "^Seccomp:\s*2" /proc/\$pid/status'
check "a network namespace of its own" '[[ \$(readlink /proc/\$pid/ns/net) != \$(readlink /proc/self/ns/net) ]]'
check "SCHED_BATCH allowed by the filter" 'chrt -p \$pid | grep -q SCHED_BATCH'
check "open files limit" 'grep -q "Max open files *8192 *8192" /proc/\$pid/limits'
check "metrics socket 0600" '[[ \$(stat -c %a /run/docker-filter-metrics/metrics.sock) == 600 ]]'
check "metrics count the two requests" 'curl -s --unix-socket /run/docker-filter-metrics/metrics.sock http://localhost/metrics | grep -q "^docker_filter_connections_accepted_total 2\$"'
check "deny line carries the client's uid and gid" 'journalctl -u docker-filter.service -o cat | grep -q "deny conn=2 uid=65534 gid=$client_gid "'
check "no warning at start (SCHED_BATCH, limits, notify)" '! journalctl -u docker-filter.service -o cat | grep -q " WARN  cannot\| WARN  the open files"'

start=\$(date +%s%N)
systemctl stop docker-filter.service 2>/dev/null
took=\$(( (\$(date +%s%N) - start) / 1000000 ))
echo "systemctl stop took \$took ms"
check "SIGTERM: exit 0 within 5 s" '[[ \$(unit Result) == success && \$(unit ExecMainStatus) == 0 && \$took -lt 5000 ]]'
check "safe socket kept, metrics folder removed" '[[ -S /run/docker-filter/docker.sock && ! -e /run/docker-filter-metrics ]]'
check "activated again by the next client" '[[ \$(client_get http://docker/v1.41/info) == 200 ]]'

mkdir -p /etc/systemd/system/docker-filter.service.d
cat >/etc/systemd/system/docker-filter.service.d/test.conf <<'CONF'
[Service]
ExecStart=
ExecStart=/usr/local/bin/docker-filter --upstream /var/run/docker.sock --whitelist /etc/docker-filter/whitelist.lst
Environment=RUST_LOG=debug
CONF
systemctl daemon-reload
systemctl restart docker-filter.service
check "--whitelist from /etc is read" '[[ \$(client_get http://docker/_ping) == 200 && \$(client_get http://docker/v1.41/info) == 403 ]]'
check "allow line at debug" 'journalctl -u docker-filter.service -o cat | grep -q "allow conn=1 uid=65534 gid=$client_gid "'
systemctl kill -s HUP docker-filter.service
sleep 1
check "SIGHUP stops with exit 0" '[[ \$(unit SubState) == dead && \$(unit ExecMainStatus) == 0 ]]'

journalctl -b -u docker-filter.service -u docker-filter.socket --no-pager -o short-monotonic
if ((failures)); then echo "RESULT: \$failures failed"; else echo "RESULT: ok"; fi
EOF

set +e
timeout 300 "$nspawn" -D "$rootfs" --register=no --keep-unit --private-network -b \
    --bind-ro=/usr --bind-ro="$work/bin:/usr/local/bin" --bind-ro="$rootfs/box:/box" \
    --bind="$work/units:/etc/systemd/system" --bind="$rootfs/results:/results" \
    >"$work/nspawn.log" 2>&1
status=$?
set -e
if [[ ! -s "$rootfs/results/check.log" ]]; then
    echo "the container did not run the checks (systemd-nspawn exit $status):" >&2
    tail -n 30 "$work/nspawn.log" >&2
    exit 1
fi
cat "$rootfs/results/check.log"
grep -q '^RESULT: ok$' "$rootfs/results/check.log"
