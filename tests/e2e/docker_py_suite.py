#!/usr/bin/env python3
"""docker-py (the Python Docker SDK) against docker-filter and a real daemon.

Run by tests/docker_py.rs; can be run by hand too:

    python docker_py_suite.py --proxy SAFE_SOCKET --daemon DOCKER_SOCKET

--proxy is the proxy's safe socket, --daemon the daemon behind it (used
directly, only to read what it holds before and after). The daemon must hold
the fixtures of tests/e2e/dockerd.sh: the running container e2e-web_1, the
image busybox:e2e and the volume e2e-data.

What is checked: the read-only calls a monitoring agent makes work; every
call that changes something or reads files out of a container fails with a
403 APIError whose message is the proxy's; two streams (events, and logs
with follow) stay open and keep delivering for --stream-seconds; the daemon
holds the same containers, images, volumes and networks afterwards.

Exit status 0 when every check passed, 1 otherwise.
"""

import argparse
import sys
import threading
import time
import traceback

import docker
import docker.errors

CONTAINER = "e2e-web_1"
IMAGE = "busybox:e2e"
VOLUME = "e2e-data"
DENIAL = "docker-filter denied"


class Tally:
    """Counts checks and remembers the failures; never stops at the first."""

    def __init__(self, suite):
        self.suite = suite
        self.checked = 0
        self.failures = []

    def check(self, name, func):
        """Runs func(); a falsy result or an exception is a failure."""
        self.checked += 1
        try:
            result = func()
        except Exception:  # noqa: BLE001 - every error is a failed check
            detail = traceback.format_exc(limit=3)
            result = False
        else:
            detail = f"returned {result!r}"
        if result or result is None:
            print(f"ok    {name}", flush=True)
        else:
            print(f"FAIL  {name}\n{detail}", flush=True)
            self.failures.append(name)

    def denied(self, name, func, method, path):
        """func() must raise a 403 APIError naming method and path."""

        def expect_403():
            try:
                func()
            except docker.errors.APIError as err:
                status = err.response.status_code if err.response is not None else None
                message = str(err.explanation)
                assert status == 403, f"status {status}: {message}"
                assert DENIAL in message, f"not the proxy's denial: {message}"
                assert method in message and path in message, (
                    f"expected {method} and {path} in: {message}"
                )
                return True
            raise AssertionError("the call succeeded")

        self.check(f"denied:  {name}", expect_403)

    def finish(self):
        failed = len(self.failures)
        passed = self.checked - failed
        print(f"{self.suite}: {passed} passed, {failed} failed, {self.checked} checked")
        for name in self.failures:
            print(f"  failed: {name}")
        return 0 if failed == 0 else 1


class Watcher(threading.Thread):
    """Reads a stream on a thread and notes when each item arrived."""

    def __init__(self, name, open_stream):
        super().__init__(name=name, daemon=True)
        self.open_stream = open_stream
        self.opened = threading.Event()
        self.stream = None
        self.arrivals = []
        self.error = None
        self.ended_at = None

    def run(self):
        try:
            self.stream = self.open_stream()
            self.opened.set()
            for _ in self.stream:
                self.arrivals.append(time.monotonic())
        except Exception as err:  # noqa: BLE001 - reported by the check
            self.error = err
        finally:
            self.ended_at = time.monotonic()
            self.opened.set()

    def close(self):
        if self.stream is not None:
            self.stream.close()
        self.join(10)


def inventory(client):
    """What the daemon holds, to compare before and after."""
    return {
        "containers": sorted(
            (c.id, c.name, c.status) for c in client.containers.list(all=True)
        ),
        "images": sorted((i.id, tuple(sorted(i.tags))) for i in client.images.list(all=True)),
        "volumes": sorted(v.name for v in client.volumes.list()),
        "networks": sorted(n.id for n in client.networks.list()),
    }


def check_allowed(tally, client):
    tally.check("allowed: ping", lambda: client.ping() is True)
    tally.check("allowed: version", lambda: "ApiVersion" in client.version())
    tally.check("allowed: info", lambda: "ServerVersion" in client.info())
    tally.check(
        "allowed: containers.list(all=True)",
        lambda: CONTAINER in [c.name for c in client.containers.list(all=True)],
    )
    tally.check(
        "allowed: containers.list(filters=...)",
        lambda: [c.name for c in client.containers.list(filters={"name": CONTAINER})]
        == [CONTAINER],
    )

    def container_by_name():
        container = client.containers.get(CONTAINER)
        return container.name == CONTAINER and "E2E_GREETING=hello" in container.attrs[
            "Config"
        ]["Env"]

    tally.check(f"allowed: containers.get({CONTAINER!r})", container_by_name)
    tally.check(
        "allowed: container.logs(tail=5)",
        lambda: b"tick" in client.containers.get(CONTAINER).logs(tail=5),
    )
    tally.check(
        "allowed: container.stats(stream=False)",
        lambda: "memory_stats" in client.containers.get(CONTAINER).stats(stream=False),
    )
    tally.check(
        "allowed: container.top()",
        lambda: "Processes" in client.containers.get(CONTAINER).top(),
    )
    tally.check(
        "allowed: images.list()",
        lambda: any(IMAGE in image.tags for image in client.images.list()),
    )
    tally.check(
        f"allowed: images.get({IMAGE!r})",
        lambda: IMAGE in client.images.get(IMAGE).tags,
    )
    tally.check(
        "allowed: image.history()",
        lambda: len(client.images.get(IMAGE).history()) >= 1,
    )

    def image_by_id():
        image_id = client.images.get(IMAGE).id
        return client.images.get(image_id).id == image_id

    tally.check("allowed: images.get(<image id>)", image_by_id)

    def digest_reaches_daemon():
        # docker-py sends "@" as %40; the proxy decodes it and the daemon
        # answers (404: no such digest), rather than the proxy refusing it.
        image_id = client.images.get(IMAGE).id.split(":", 1)[1]
        try:
            client.images.get(f"busybox@sha256:{image_id}")
        except docker.errors.ImageNotFound:
            return True
        except docker.errors.APIError as err:
            raise AssertionError(f"{err.response.status_code}: {err.explanation}") from err
        return True

    tally.check("allowed: images.get(name@digest) reaches the daemon", digest_reaches_daemon)
    tally.check(
        "allowed: volumes.list()",
        lambda: VOLUME in [v.name for v in client.volumes.list()],
    )
    tally.check(
        f"allowed: volumes.get({VOLUME!r})",
        lambda: client.volumes.get(VOLUME).name == VOLUME,
    )
    tally.check(
        "allowed: networks.list()",
        lambda: "none" in [n.name for n in client.networks.list()],
    )
    tally.check(
        "allowed: networks.get('none')",
        lambda: client.networks.get("none").name == "none",
    )

    def bounded_events():
        now = int(time.time())
        events = list(client.events(since=now - 30, until=now, decode=True))
        return all(isinstance(event, dict) for event in events)

    tally.check("allowed: events(since, until, decode=True) ends", bounded_events)


def check_denied(tally, client):
    container = client.containers.get(CONTAINER)
    image = client.images.get(IMAGE)

    tally.denied(
        "containers.run",
        lambda: client.containers.run(IMAGE, "true", network_mode="none", remove=True),
        "POST",
        "/containers/create",
    )
    tally.denied(
        "containers.create",
        lambda: client.containers.create(IMAGE, "true", network_mode="none"),
        "POST",
        "/containers/create",
    )
    tally.denied("container.stop", lambda: container.stop(timeout=1), "POST", "/stop")
    tally.denied("container.kill", container.kill, "POST", "/kill")
    tally.denied(
        "container.remove(force=True)",
        lambda: container.remove(force=True),
        "DELETE",
        f"/containers/{container.id}",
    )
    tally.denied("container.pause", container.pause, "POST", "/pause")
    tally.denied("container.exec_run", lambda: container.exec_run("true"), "POST", "/exec")
    tally.denied(
        "container.get_archive",
        lambda: container.get_archive("/etc/e2e-secret.txt"),
        "GET",
        "/archive",
    )

    def export():
        for _ in container.export():
            pass

    tally.denied("container.export", export, "GET", "/export")

    def save():
        for _ in image.save():
            pass

    tally.denied("image.save", save, "GET", "/get")
    tally.denied("containers.prune", client.containers.prune, "POST", "/containers/prune")
    tally.denied(
        "volumes.create", lambda: client.volumes.create("e2e-denied"), "POST", "/volumes/create"
    )
    tally.denied(
        "networks.create",
        lambda: client.networks.create("e2e-denied"),
        "POST",
        "/networks/create",
    )
    tally.denied("secrets.list", client.secrets.list, "GET", "/secrets")
    # client.swarm reads GET /swarm as soon as it is made.
    tally.denied("client.swarm (GET /swarm)", lambda: client.swarm, "GET", "/swarm")


def check_streams(tally, watchers, seconds):
    for watcher in watchers:
        name = f"stream: {watcher.name} open and delivering after {seconds:g} s"

        def still_delivering(watcher=watcher):
            now = time.monotonic()
            assert watcher.error is None, f"stream error: {watcher.error!r}"
            assert watcher.ended_at is None, "the stream ended"
            assert watcher.arrivals, "nothing arrived"
            silence = now - watcher.arrivals[-1]
            assert silence < 6, f"nothing arrived for {silence:.1f} s"
            return True

        tally.check(name, still_delivering)
    for watcher in watchers:
        watcher.close()
        tally.check(f"stream: {watcher.name} closes on request", lambda w=watcher: not w.is_alive())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy", required=True, help="the proxy's safe socket")
    parser.add_argument("--daemon", required=True, help="the Docker socket behind it")
    parser.add_argument("--stream-seconds", type=float, default=25.0)
    args = parser.parse_args()

    print(f"docker-py {docker.__version__}, Python {sys.version.split()[0]}", flush=True)
    direct = docker.DockerClient(base_url=f"unix://{args.daemon}", version="auto", timeout=30)
    client = docker.DockerClient(base_url=f"unix://{args.proxy}", version="auto", timeout=30)
    tally = Tally("docker-py e2e")

    before = inventory(direct)
    if CONTAINER not in [name for _, name, _ in before["containers"]]:
        print(f"the daemon lacks the fixtures: run tests/e2e/dockerd.sh seed {args.daemon}")
        return 1

    started = time.monotonic()
    watchers = [
        Watcher("events()", lambda: client.events(decode=True)),
        Watcher(
            "logs(follow=True, stream=True)",
            lambda: client.containers.get(CONTAINER).logs(stream=True, follow=True, tail=1),
        ),
    ]
    for watcher in watchers:
        watcher.start()
        watcher.opened.wait(10)

    check_allowed(tally, client)
    check_denied(tally, client)

    time.sleep(max(0.0, started + args.stream_seconds - time.monotonic()))
    check_streams(tally, watchers, args.stream_seconds)

    after = inventory(direct)
    tally.check("the daemon holds exactly what it held before", lambda: before == after)
    if before != after:
        print(f"before: {before}\nafter:  {after}")
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
