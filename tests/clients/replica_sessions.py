"""Concurrent FTP sessions with Python's ftplib, for the replicas tier (scripts/test-replicas.sh).

usage: replica_sessions.py burst HOST PORT USER PASSWORD SESSIONS SOURCE[,SOURCE...]
  SESSIONS sessions at once, spread over the SOURCE addresses (bound as the clients' own): each
  logs in (three logins at a time), waits until all are logged in, then STORs s-<n>.txt, LISTs, and RETRs the file back,
  each after a random pause of up to 2 s (a burst of PASVs all at once would ask a replica for more
  ports than its slice has: that is sizing, not routing).
  Prints one JSON line per session: {"session", "source", "ports", "ok", "error"}; "ports" are the
  data ports of its PASV replies.

usage: replica_sessions.py hold HOST PORT USER PASSWORD SESSIONS SOURCE[,SOURCE...] STOPFILE
  SESSIONS sessions that LIST every 0.5-2.5 s until STOPFILE exists; prints "ready" once all are
  logged in, then at the end one JSON line per session: {"session", "ports", "lists",
  "alive", "error"}: "alive" when every LIST succeeded and the session still answers NOOP.

usage: replica_sessions.py readback HOST PORT USER PASSWORD SESSIONS SOURCE[,SOURCE...] FILES
  SESSIONS later sessions, one per SOURCE at a time, each RETRs every s-<n>.txt a burst of FILES
  sessions (over the same SOURCEs) stored, and checks every byte. Prints one JSON line per session:
  {"session", "source", "ports", "read", "ok", "error"}.

"""
import ftplib
import io
import json
import os
import random
import re
import sys
import threading
import time


class RecordingFTP(ftplib.FTP):
    """FTP that remembers the data port of every PASV reply."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ports = []

    def makepasv(self):
        host, port = super().makepasv()
        self.ports.append(port)
        return host, port


# The server refuses a login while as many verifications for one client address are running as
# failures would lock it out (5 by default), and behind the balancer's masquerade every client has
# one address: so at most 3 logins at a time, which no replica can take for an attack.
logins = threading.Semaphore(3)


def body(n, sources):
    """What session n of a burst stores as s-<n>.txt."""
    return (f"session {n} from {sources[n % len(sources)]}\n" * 200).encode()


def connect(host, port, user, password, source):
    ftp = RecordingFTP(timeout=60, source_address=(source, 0))
    with logins:
        ftp.connect(host, int(port))
        ftp.login(user, password)
    return ftp


def start(run, count):
    """Starts run(0) .. run(count - 1), each on a thread of its own."""
    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    return threads


def finish(threads, results):
    """Waits for every thread, then prints each session's result as one JSON line."""
    for thread in threads:
        thread.join()
    for result in results:
        print(json.dumps(result), flush=True)


def burst(host, port, user, password, sessions, sources):
    results = [None] * sessions
    barrier = threading.Barrier(sessions, timeout=120)

    def run(n):
        source = sources[n % len(sources)]
        result = {"session": n, "source": source, "ports": [], "ok": False, "error": None}
        ftp = None
        try:
            ftp = connect(host, port, user, password, source)
            barrier.wait()
            name = f"s-{n}.txt"
            expected = body(n, sources)
            pause = random.Random(n).uniform
            time.sleep(pause(0, 2))
            ftp.storbinary(f"STOR {name}", io.BytesIO(expected))
            listing = []
            time.sleep(pause(0, 2))
            ftp.retrlines("LIST", listing.append)
            if not any(line.endswith(" " + name) for line in listing):
                raise AssertionError(f"LIST lacks {name}: {listing}")
            back = io.BytesIO()
            time.sleep(pause(0, 2))
            ftp.retrbinary(f"RETR {name}", back.write)
            if back.getvalue() != expected:
                raise AssertionError(f"RETR {name}: {len(back.getvalue())} bytes differ")
            ftp.quit()
            result["ok"] = True
        except Exception as error:  # reported per session, the tier counts them
            result["error"] = f"{type(error).__name__}: {error}"
            try:
                barrier.abort()
            except threading.BrokenBarrierError:
                pass
        if ftp is not None:
            result["ports"] = ftp.ports
        results[n] = result

    finish(start(run, sessions), results)


def hold(host, port, user, password, sessions, sources, stopfile):
    results = [None] * sessions
    logged_in = threading.Barrier(sessions + 1, timeout=120)

    def run(n):
        result = {"session": n, "ports": [], "lists": 0, "alive": False, "error": None}
        ftp = None
        try:
            ftp = connect(host, port, user, password, sources[n % len(sources)])
            ftp.retrlines("LIST", lambda line: None)
            result["lists"] += 1
            logged_in.wait()
            pause = random.Random(n).uniform
            while not os.path.exists(stopfile):
                # Apart, so the sessions of one replica do not all ask for a port at once.
                time.sleep(pause(0.5, 2.5))
                ftp.retrlines("LIST", lambda line: None)
                result["lists"] += 1
            ftp.voidcmd("NOOP")
            ftp.quit()
            result["alive"] = True
        except Exception as error:
            result["error"] = f"{type(error).__name__}: {error}"
            try:
                logged_in.abort()
            except threading.BrokenBarrierError:
                pass
        if ftp is not None:
            result["ports"] = ftp.ports
        results[n] = result

    threads = start(run, sessions)
    try:
        logged_in.wait()
        print("ready", flush=True)
    except threading.BrokenBarrierError:
        print("not ready: a session failed to log in", flush=True)
    finish(threads, results)


def readback(host, port, user, password, sessions, sources, files):
    results = [None] * sessions

    def run(source_index):
        for n in range(source_index, sessions, len(sources)):
            source = sources[n % len(sources)]
            result = {"session": n, "source": source, "ports": [], "read": 0, "ok": False, "error": None}
            ftp = None
            try:
                ftp = connect(host, port, user, password, source)
                for m in range(files):
                    back = io.BytesIO()
                    ftp.retrbinary(f"RETR s-{m}.txt", back.write)
                    if back.getvalue() != body(m, sources):
                        raise AssertionError(f"RETR s-{m}.txt: {len(back.getvalue())} bytes, not what session {m} stored")
                    result["read"] += 1
                ftp.quit()
                result["ok"] = True
            except Exception as error:
                result["error"] = f"{type(error).__name__}: {error}"
            if ftp is not None:
                result["ports"] = ftp.ports
            results[n] = result

    finish(start(run, len(sources)), results)


mode = sys.argv[1]
host, port, user, password, count, sources = sys.argv[2:8]
sources = [s for s in sources.split(",") if re.fullmatch(r"[0-9.]+", s)]
if mode == "burst":
    burst(host, port, user, password, int(count), sources)
elif mode == "hold":
    hold(host, port, user, password, int(count), sources, sys.argv[8])
elif mode == "readback":
    readback(host, port, user, password, int(count), sources, int(sys.argv[8]))
else:
    sys.exit(f"unknown mode {mode}: burst, hold or readback")
