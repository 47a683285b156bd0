"""Mixed traffic for bench/soak: logins with never-seen tokens, repeated tokens, POST and
PUT, bad tokens and slow clients, at a steady rate, while the server's resident memory is
sampled. Every answer is checked: a GET must return the key last written for that user.

    soak.py PORT TOKENS_FILE USERS PID SECONDS RATE OUT_CSV

Prints a summary; exits 1 if any request failed. Not a test: run by bench/soak.
"""

import asyncio
import base64
import json
import os
import random
import sys
import time

PORT, TOKENS, USERS, PID, SECONDS, RATE, OUT = sys.argv[1:8]
PORT, USERS, PID, SECONDS, RATE = int(PORT), int(USERS), int(PID), int(SECONDS), float(RATE)
WORKERS = 32
SLOW_CLIENTS = 50
SAMPLE_EVERY = 5

tokens = open(TOKENS).read().split()
# Token i is for user i % USERS; the first USERS tokens set the keys up.
fresh = [list(range(u + USERS, len(tokens), USERS)) for u in range(USERS)]
for pool in fresh:
    pool.reverse()
keys = {}
used = {}
counts = {}
failures = []


def count(what):
    counts[what] = counts.get(what, 0) + 1


def rss_kib():
    with open(f"/proc/{PID}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Connection:
    """One kept-alive HTTP/1.1 connection, reopened when the server closes it."""

    def __init__(self):
        self.reader = self.writer = None

    async def request(self, method, path, token=None, body=None):
        for attempt in (1, 2):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", PORT)
            head = f"{method} {path} HTTP/1.1\r\nHost: soak\r\n"
            if token:
                head += f"Authorization: Bearer {token}\r\n"
            payload = b""
            if body is not None:
                payload = json.dumps(body).encode()
                head += "Content-Type: application/json\r\n"
            head += f"Content-Length: {len(payload)}\r\n\r\n"
            try:
                self.writer.write(head.encode() + payload)
                await self.writer.drain()
                status_line = await self.reader.readline()
                if not status_line:
                    raise ConnectionError("closed")
                status = int(status_line.split()[1])
                length = 0
                while True:
                    line = await self.reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                data = await self.reader.readexactly(length) if length else b""
                return status, data
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                # A kept-alive connection the server closed as idle: reopen once.
                self.writer = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


async def worker(index, deadline, interval):
    connection = Connection()
    mine = [u for u in range(USERS) if u % WORKERS == index]
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        user = random.choice(mine)
        roll = random.random()
        try:
            if roll < 0.45 and fresh[user]:
                # A login: a token never seen before, then the key.
                token = tokens[fresh[user].pop()]
                used[user].append(token)
                status, data = await connection.request("GET", "/user-keys", token)
                action, ok = "get_cold", status == 200 and json.loads(data)["key"] == keys[user]
            elif roll < 0.75:
                token = random.choice(used[user])
                status, data = await connection.request("GET", "/user-keys", token)
                action, ok = "get_warm", status == 200 and json.loads(data)["key"] == keys[user]
            elif roll < 0.85:
                key = base64.b64encode(os.urandom(64)).decode()
                status, _ = await connection.request(
                    "PUT", "/user-keys", random.choice(used[user]), {"key": key})
                action, ok = "put", status == 200
                if ok:
                    keys[user] = key
            elif roll < 0.90:
                # A second POST for a user who has a key: 400, nothing changes.
                status, _ = await connection.request(
                    "POST", "/user-keys", random.choice(used[user]), {"key": "AQID"})
                action, ok = "post_existing", status == 400
            else:
                bad = random.choice([
                    "not-a-token",
                    random.choice(used[user])[:-8] + "AAAAAAAA",
                    "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
                ])
                status, _ = await connection.request("GET", "/user-keys", bad)
                action, ok = "bad_token", status == 401
        except Exception as error:  # noqa: BLE001 - every failure is reported
            action, ok, status = "connection", False, repr(error)
        count(action)
        if not ok:
            failures.append((action, status))


async def slow_client(deadline):
    """Sends half a request and waits to be cut off, again and again."""
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
            writer.write(b"GET /user-keys HTTP/1.1\r\nHost: soak\r\nX-Slow: 1\r\n")
            await writer.drain()
            await asyncio.wait_for(reader.read(), timeout=60)
            count("slow_cut_off")
            writer.close()
        except (asyncio.TimeoutError, OSError):
            count("slow_not_cut_off")
            failures.append(("slow", "not cut off within 60 s"))


async def sampler(deadline, samples):
    start = time.monotonic()
    while time.monotonic() < deadline:
        samples.append((round(time.monotonic() - start), rss_kib()))
        await asyncio.sleep(SAMPLE_EVERY)
    samples.append((round(time.monotonic() - start), rss_kib()))


async def setup():
    connection = Connection()
    for user in range(USERS):
        key = base64.b64encode(os.urandom(64)).decode()
        status, _ = await connection.request("POST", "/user-keys", tokens[user], {"key": key})
        if status != 200:
            raise SystemExit(f"setup POST for user {user} answered {status}")
        keys[user] = key
        used[user] = [tokens[user]]


async def main():
    await setup()
    samples = []
    deadline = time.monotonic() + SECONDS
    interval = WORKERS / RATE
    started = time.monotonic()
    await asyncio.gather(
        sampler(deadline, samples),
        *(worker(i, deadline, interval) for i in range(WORKERS)),
        *(slow_client(deadline) for _ in range(SLOW_CLIENTS)),
    )
    elapsed = time.monotonic() - started
    with open(OUT, "w") as out:
        out.write("seconds,rss_kib\n")
        for second, kib in samples:
            out.write(f"{second},{kib}\n")
    requests = sum(v for k, v in counts.items() if not k.startswith("slow"))
    cold_left = sum(len(pool) for pool in fresh)
    print(f"requests:           {requests} in {elapsed:.0f} s ({requests / elapsed:.0f} req/s)")
    for action in sorted(counts):
        print(f"  {action + ':':<18}{counts[action]}")
    print(f"never-seen tokens:  {counts.get('get_cold', 0)} used, {cold_left} left unused")
    print(f"failures:           {len(failures)}")
    for failure in failures[:10]:
        print(f"  {failure}")
    minute = {}
    for second, kib in samples:
        minute.setdefault(second // 60, []).append(kib)
    print("RSS by minute (MiB, max):  " + "  ".join(
        f"{m}:{max(v) / 1024:.1f}" for m, v in sorted(minute.items())))
    print(f"RSS first/last sample:     {samples[0][1] / 1024:.1f} / {samples[-1][1] / 1024:.1f} MiB")
    sys.exit(1 if failures else 0)


asyncio.run(main())
