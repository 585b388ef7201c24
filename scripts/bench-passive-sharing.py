#!/usr/bin/env python3
"""Many sessions through a tiny passive range: SESSIONS ftplib sessions from ADDRESSES loopback
client addresses (127.0.1.1, 127.0.1.2, ...), all logged in first, then all downloading FILE at
once (a barrier releases them together) from the server at HOST:PORT. Prints one JSON line:
sessions, addresses, refused (a 425 or any other failure), seconds, and the bytes checked.

Usage: bench-passive-sharing.py HOST PORT FILE SIZE [SESSIONS] [ADDRESSES]
Not a test: scripts/bench-passive.sh runs it against a server with a 5-port range."""

import ftplib
import io
import json
import sys
import threading
import time


def main():
    host, port, name, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    sessions = int(sys.argv[5]) if len(sys.argv) > 5 else 500
    addresses = int(sys.argv[6]) if len(sys.argv) > 6 else 50
    start = threading.Barrier(sessions + 1)
    lock = threading.Lock()
    results = {"ok": 0, "refused": 0, "errors": []}

    def session(index):
        source = f"127.0.1.{1 + index % addresses}"
        ftp = None
        try:
            ftp = ftplib.FTP(timeout=120, source_address=(source, 0))
            ftp.connect(host, port)
            ftp.login()
        except Exception as error:  # noqa: BLE001 - every failure counts as refused
            start.wait()
            with lock:
                results["refused"] += 1
                results["errors"].append(f"{source} login: {error}")
            return
        start.wait()
        try:
            data = io.BytesIO()
            ftp.retrbinary(f"RETR {name}", data.write)
            good = len(data.getvalue()) == size
            with lock:
                if good:
                    results["ok"] += 1
                else:
                    results["refused"] += 1
                    results["errors"].append(f"{source}: got {len(data.getvalue())} bytes")
            ftp.quit()
        except Exception as error:  # noqa: BLE001
            with lock:
                results["refused"] += 1
                results["errors"].append(f"{source} RETR: {error}")

    threads = [threading.Thread(target=session, args=(i,)) for i in range(sessions)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.monotonic()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - began
    print(
        json.dumps(
            {
                "sessions": sessions,
                "addresses": addresses,
                "completed": results["ok"],
                "refused": results["refused"],
                "seconds": round(seconds, 2),
                "bytes_each": size,
                "first_errors": results["errors"][:5],
            }
        )
    )
    return 0 if results["refused"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
