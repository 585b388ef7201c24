#!/usr/bin/env python3
"""SESSIONS anonymous ftplib sessions released together by a barrier, spread over the SOURCE
addresses (bound as the clients' own), each downloading FILE from HOST:PORT and checking its size
and SHA-256. A session the server turns away at connect with 421 (its per-address session limit)
tries again after a short random pause, until DEADLINE seconds after the release; that retry is
counted, and the session fails only when it never gets its whole file.

Prints one JSON line: sessions, completed, failed, seconds (release to the last session's end),
refused_at_connect (421s retried), by_slice (completed sessions per passive slice: data port minus
PASV_MIN, divided by PER_REPLICA), first_errors.

Usage: bench-replica-sessions.py HOST PORT FILE SIZE SHA256 SESSIONS SOURCE[,SOURCE...] PASV_MIN PER_REPLICA [DEADLINE]
Not a test: scripts/bench-replicas.sh runs it from the balancer's client namespace."""

import ftplib
import hashlib
import json
import random
import sys
import threading
import time


class Download:
    """One session's download, hashed as it arrives."""

    def __init__(self):
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, block):
        self.digest.update(block)
        self.size += len(block)


class RecordingFTP(ftplib.FTP):
    """FTP that remembers the data port of its PASV reply."""

    port = None

    def makepasv(self):
        host, port = super().makepasv()
        self.port = port
        return host, port


def main():
    host, port, name, size, sha = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
    sessions, sources = int(sys.argv[6]), sys.argv[7].split(",")
    pasv_min, per_replica = int(sys.argv[8]), int(sys.argv[9])
    deadline_seconds = float(sys.argv[10]) if len(sys.argv) > 10 else 300
    release = threading.Barrier(sessions + 1)
    lock = threading.Lock()
    results = {"completed": 0, "failed": 0, "refused": 0, "errors": [], "slices": {}}
    began = [0.0]

    def fail(text):
        with lock:
            results["failed"] += 1
            results["errors"].append(text)

    def session(index):
        source = sources[index % len(sources)]
        release.wait()
        deadline = began[0] + deadline_seconds
        ftp = None
        while ftp is None:
            candidate = RecordingFTP(timeout=60, source_address=(source, 0))
            try:
                candidate.connect(host, port)
                ftp = candidate
            except ftplib.error_temp as error:  # 421: the per-address limit; others end first
                candidate.close()
                with lock:
                    results["refused"] += 1
                if time.monotonic() > deadline:
                    fail(f"{index} {source} connect: {error} until the deadline")
                    return
                time.sleep(random.uniform(0.05, 0.25))
            except OSError as error:
                fail(f"{index} {source} connect: {error}")
                return
        try:
            ftp.login()
            download = Download()
            ftp.retrbinary(f"RETR {name}", download.write)
            ftp.quit()
        except (OSError, ftplib.Error, EOFError) as error:
            fail(f"{index} {source} port {ftp.port}: {error}")
            return
        if download.size != size or download.digest.hexdigest() != sha:
            fail(f"{index} {source}: got {download.size} bytes, sha256 {download.digest.hexdigest()[:12]}")
            return
        replica = str((ftp.port - pasv_min) // per_replica)
        with lock:
            results["completed"] += 1
            results["slices"][replica] = results["slices"].get(replica, 0) + 1

    threads = [threading.Thread(target=session, args=(i,)) for i in range(sessions)]
    for thread in threads:
        thread.start()
    began[0] = time.monotonic()
    release.wait()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - began[0]
    print(
        json.dumps(
            {
                "sessions": sessions,
                "completed": results["completed"],
                "failed": results["failed"],
                "seconds": round(seconds, 2),
                "refused_at_connect": results["refused"],
                "by_slice": dict(sorted(results["slices"].items())),
                "first_errors": results["errors"][:5],
            }
        )
    )
    return 0 if results["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
