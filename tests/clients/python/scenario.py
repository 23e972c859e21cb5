"""The client-matrix scenario with redis-py (tests/client_matrix.rs runs it).

    .venv/bin/python scenario.py redis://127.0.0.1:6380 [--protocol 2|3|default]

Runs every step against the URL and prints one `ok <step>: ...` line per step
passed (or `skipped <step>: <why>` where the library itself refuses the
feature), then `all steps passed`. The first failure prints `FAIL <step>:
<message>` on stderr and exits 1; a run that hangs is stopped by a watchdog
(exit 3). Keys and channels carry a per-run prefix, so runs can overlap.
"""

import argparse
import hashlib
import os
import secrets
import sys
import threading
import time
import traceback
import urllib.parse

import redis
from redis.cache import CacheConfig

# The whole run must take a few seconds; this only catches a hang.
WATCHDOG_SECONDS = 30
PIPELINE_COMMANDS = 1000
PUBSUB_MESSAGES = 200
BIG_VALUE_BYTES = 10 * 1024 * 1024

current_step = "start"


class StepFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise StepFailed(message)


def fail(step, message):
    print(f"FAIL {step}: {message}", file=sys.stderr, flush=True)
    os._exit(1)


def watchdog():
    print(
        f"FAIL {current_step}: still running after {WATCHDOG_SECONDS}s (hung?)",
        file=sys.stderr,
        flush=True,
    )
    os._exit(3)


def url_with_db(url, db):
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{db}"))


class Scenario:
    def __init__(self, url, protocol):
        self.url = url
        self.protocol = protocol  # None: the library's default
        self.prefix = f"matrix:py:{os.getpid()}:{secrets.token_hex(4)}:"
        self.keys = {0: set(), 1: set()}

    def key(self, name, db=0):
        key = self.prefix + name
        self.keys[db].add(key)
        return key

    def client(self, url=None, **kwargs):
        return redis.Redis.from_url(
            url or self.url,
            protocol=self.protocol,
            socket_timeout=10,
            socket_connect_timeout=5,
            **kwargs,
        )

    # -- steps: each returns the detail for its `ok` line ------------------

    def connect(self):
        self.r = self.client()
        check(self.r.ping() is True, "PING did not answer PONG")
        self.other = self.client()
        check(self.other.ping() is True, "PING on a second connection failed")
        conn = self.r.connection_pool.get_connection()
        try:
            proto = conn.get_protocol()
            hello = conn.handshake_metadata or {}
        finally:
            self.r.connection_pool.release(conn)
        server = hello.get(b"version", hello.get("version"))
        via = f"HELLO answered, server {server.decode()}" if server else "no HELLO"
        return f"redis-py {redis.__version__}, RESP{proto} ({via})"

    def set_get(self):
        k = self.key("setget")
        check(self.r.set(k, "hello") is True, "SET did not answer OK")
        got = self.r.get(k)
        check(got == b"hello", f"GET returned {got!r}, expected b'hello'")
        return "SET then GET returned the value"

    def pipeline(self):
        pipe = self.r.pipeline(transaction=False)
        expected = []
        counter = self.key("pipeline:n")
        for i in range(PIPELINE_COMMANDS):
            if i % 3 == 0:
                pipe.set(self.key(f"pipeline:{i}"), f"v{i}")
                expected.append(True)
            elif i % 3 == 1:
                pipe.get(self.key(f"pipeline:{i - 1}"))
                expected.append(f"v{i - 1}".encode())
            else:
                pipe.incr(counter)
                expected.append(i // 3 + 1)
        replies = pipe.execute()
        check(len(replies) == len(expected), f"{len(replies)} replies for {len(expected)} commands")
        for i, (got, want) in enumerate(zip(replies, expected)):
            check(got == want, f"reply {i} is {got!r}, expected {want!r}")
        return f"{PIPELINE_COMMANDS} replies, each the right one in order"

    def multi_exec(self):
        k, n = self.key("multi"), self.key("multi:n")
        pipe = self.r.pipeline(transaction=True)
        pipe.set(k, "a").incr(n).incr(n).get(k)
        replies = pipe.execute()
        check(replies == [True, 1, 2, b"a"], f"EXEC returned {replies!r}")
        return "EXEC returned [OK, 1, 2, 'a']"

    def watch_conflict(self):
        k = self.key("watch")
        self.r.set(k, "before")
        with self.r.pipeline() as pipe:
            pipe.watch(k)
            check(pipe.get(k) == b"before", "GET after WATCH returned the wrong value")
            self.other.set(k, "theirs")
            pipe.multi()
            pipe.set(k, "mine")
            try:
                replies = pipe.execute()
            except redis.WatchError:
                pass
            else:
                raise StepFailed(f"EXEC ran despite the conflicting write: {replies!r}")
        got = self.r.get(k)
        check(got == b"theirs", f"the key holds {got!r} after the aborted EXEC")
        # The same without a conflict commits.
        with self.r.pipeline() as pipe:
            pipe.watch(k)
            pipe.multi()
            pipe.set(k, "mine")
            replies = pipe.execute()
        check(replies == [True], f"uncontended WATCH/EXEC returned {replies!r}")
        check(self.r.get(k) == b"mine", "uncontended EXEC did not write")
        return "EXEC aborted (WatchError) after another connection's write; uncontended EXEC commits"

    def pubsub(self):
        channel = self.key("channel")
        subscriber = self.client()
        pubsub = subscriber.pubsub()
        pubsub.subscribe(channel)
        confirm = pubsub.get_message(timeout=5)
        check(
            confirm is not None and confirm["type"] in ("subscribe", b"subscribe"),
            f"no subscribe confirmation: {confirm!r}",
        )
        # Ordinary commands on a third connection while messages flow.
        busy = self.client()
        counter = self.key("pubsub:busy")
        stop = threading.Event()
        busy_errors = []
        busy_count = [0]

        def keep_busy():
            try:
                while not stop.is_set():
                    busy.incr(counter)
                    busy_count[0] += 1
            except Exception as e:  # reported below
                busy_errors.append(e)

        thread = threading.Thread(target=keep_busy, daemon=True)
        thread.start()
        try:
            for i in range(PUBSUB_MESSAGES):
                receivers = self.r.publish(channel, f"m{i}")
                check(receivers == 1, f"PUBLISH {i} reached {receivers} subscribers, expected 1")
            received = []
            deadline = time.monotonic() + 10
            while len(received) < PUBSUB_MESSAGES and time.monotonic() < deadline:
                message = pubsub.get_message(timeout=1)
                if message is not None and message["type"] in ("message", b"message"):
                    received.append(message["data"])
        finally:
            stop.set()
            thread.join(5)
            pubsub.close()
        check(not busy_errors, f"the other connection's commands failed: {busy_errors!r}")
        want = [f"m{i}".encode() for i in range(PUBSUB_MESSAGES)]
        check(
            received == want,
            f"received {len(received)} of {PUBSUB_MESSAGES} messages"
            + ("" if len(received) < PUBSUB_MESSAGES else " out of order"),
        )
        got = int(self.r.get(counter) or 0)
        check(got == busy_count[0], f"INCR counter is {got}, {busy_count[0]} INCRs answered")
        return f"{PUBSUB_MESSAGES} messages in order while {busy_count[0]} INCRs ran on another connection"

    def pubsub_same_connection(self):
        return (
            "skipped",
            "redis-py runs pub/sub on its PubSub object's own connection and has "
            "no API for ordinary commands on it",
        )

    def blpop(self):
        empty = self.key("blpop:empty")
        start = time.monotonic()
        got = self.r.blpop([empty], timeout=1)
        waited = time.monotonic() - start
        check(got is None, f"BLPOP on an empty list returned {got!r}")
        check(0.9 <= waited < 3, f"BLPOP with timeout 1 returned after {waited:.2f}s")
        k = self.key("blpop:list")
        pusher = threading.Timer(0.2, lambda: self.other.lpush(k, "pushed"))
        pusher.start()
        start = time.monotonic()
        got = self.r.blpop([k], timeout=5)
        served = time.monotonic() - start
        pusher.join()
        check(
            got is not None and list(got) == [k.encode(), b"pushed"],
            f"BLPOP returned {got!r}",
        )
        check(served < 3, f"BLPOP took {served:.2f}s to see the LPUSH")
        return f"timeout: nil after {waited:.2f}s; served by another connection's LPUSH after {served:.2f}s"

    def select(self):
        db1 = self.client(url_with_db(self.url, 1))
        k = self.key("select", db=1)
        self.keys[0].add(k)
        check(db1.set(k, "in-db1") is True, "SET in db 1 failed")
        check(db1.get(k) == b"in-db1", "db 1 does not see its own key")
        got = self.r.get(k)
        check(got is None, f"db 0 sees the key set in db 1: {got!r}")
        k0 = self.key("select:db0")
        self.keys[1].add(k0)
        self.r.set(k0, "in-db0")
        got = db1.get(k0)
        check(got is None, f"db 1 sees the key set in db 0: {got!r}")
        check(self.r.get(k0) == b"in-db0", "db 0 lost its own key")
        self.db1 = db1
        return "a key set through /1 is invisible in db 0, and the other way round"

    def evalsha(self):
        k = self.key("script")
        body = f"-- {self.prefix}\nreturn {{KEYS[1], ARGV[1]}}"
        sha = self.r.script_load(body)
        check(sha == hashlib.sha1(body.encode()).hexdigest(), f"SCRIPT LOAD returned {sha!r}")
        got = self.r.evalsha(sha, 1, k, "arg")
        check(got == [k.encode(), b"arg"], f"EVALSHA returned {got!r}")
        unknown = hashlib.sha1(f"-- {self.prefix} never loaded".encode()).hexdigest()
        try:
            self.r.evalsha(unknown, 0)
        except redis.exceptions.NoScriptError:
            pass
        else:
            raise StepFailed("EVALSHA of an unloaded script did not raise NoScriptError")
        # register_script: EVALSHA, NOSCRIPT, then SCRIPT LOAD and EVALSHA again.
        fallback_body = f"-- {self.prefix} fallback\nreturn ARGV[1]"
        script = self.r.register_script(fallback_body)
        check(self.r.script_exists(script.sha) == [False], "the fallback script was already loaded")
        got = script(keys=[k], args=["via-fallback"])
        check(got == b"via-fallback", f"register_script call returned {got!r}")
        check(self.r.script_exists(script.sha) == [True], "the NOSCRIPT fallback did not load the script")
        return "SCRIPT LOAD + EVALSHA; NoScriptError; register_script loaded and ran on NOSCRIPT"

    def big_value(self):
        k = self.key("big")
        blob = os.urandom(BIG_VALUE_BYTES)
        check(self.r.set(k, blob) is True, "SET of 10 MiB failed")
        check(self.r.strlen(k) == len(blob), "STRLEN differs")
        got = self.r.get(k)
        check(got is not None and len(got) == len(blob), f"GET returned {0 if got is None else len(got)} bytes")
        check(got == blob, "the 10 MiB value came back with different bytes")
        return f"{BIG_VALUE_BYTES} random bytes round-tripped exactly"

    def client_side_cache(self):
        k = self.key("cached")
        self.r.set(k, "v1")
        try:
            cached = self.client(cache_config=CacheConfig())
            cached.ping()
        except redis.exceptions.RedisError as e:
            reason = str(e)
            refusals = (
                "client-side caching is supported by Redis 7.4 or later",
                "Client caching is only supported with RESP version 3",
            )
            if any(r in reason for r in refusals):
                return ("skipped", f"redis-py {redis.__version__} refuses: {reason}")
            raise
        check(cached.get(k) == b"v1", "first GET through the cache")
        check(cached.get(k) == b"v1", "second GET through the cache")
        cache = cached.get_cache()
        check(cache is not None and cache.size() >= 1, "the GET reply was not cached")
        self.other.set(k, "v2")
        deadline = time.monotonic() + 3
        while True:
            got = cached.get(k)
            if got == b"v2":
                break
            check(time.monotonic() < deadline, f"still {got!r} 3s after another connection's SET")
            time.sleep(0.01)
        return "cached GET invalidated by another connection's SET"

    def cleanup(self):
        deleted = self.r.delete(*self.keys[0])
        if self.keys[1]:
            deleted += self.db1.delete(*self.keys[1])
        return f"deleted {deleted} keys"


STEPS = [
    ("connect", Scenario.connect),
    ("set-get", Scenario.set_get),
    ("pipeline", Scenario.pipeline),
    ("multi-exec", Scenario.multi_exec),
    ("watch-conflict", Scenario.watch_conflict),
    ("pubsub", Scenario.pubsub),
    ("pubsub-same-connection", Scenario.pubsub_same_connection),
    ("blpop", Scenario.blpop),
    ("select", Scenario.select),
    ("evalsha", Scenario.evalsha),
    ("big-value", Scenario.big_value),
    ("client-side-cache", Scenario.client_side_cache),
    ("cleanup", Scenario.cleanup),
]


def main():
    global current_step
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="redis://host:port (database 0)")
    parser.add_argument(
        "--protocol",
        choices=["2", "3", "default"],
        default="default",
        help="RESP version to ask for; default: the library's own choice",
    )
    args = parser.parse_args()
    protocol = None if args.protocol == "default" else int(args.protocol)

    timer = threading.Timer(WATCHDOG_SECONDS, watchdog)
    timer.daemon = True
    timer.start()
    started = time.monotonic()
    scenario = Scenario(args.url, protocol)
    for name, run in STEPS:
        current_step = name
        try:
            result = run(scenario)
        except StepFailed as e:
            fail(name, str(e))
        except Exception as e:
            traceback.print_exc()
            fail(name, f"{type(e).__name__}: {e}")
        if isinstance(result, tuple) and result[0] == "skipped":
            print(f"skipped {name}: {result[1]}", flush=True)
        else:
            print(f"ok {name}: {result}", flush=True)
    print(f"all steps passed in {time.monotonic() - started:.2f}s", flush=True)


if __name__ == "__main__":
    main()
