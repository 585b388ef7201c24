"""Holds N SFTP sessions open at once (key login, one listing each) for scripts/bench-sftp.sh.

usage: bench-sftp-sessions.py HOST PORT USER KEYFILE N SECONDS
Prints "ready N" once every session is open, keeps them for SECONDS, then closes them.
"""

import sys
import threading
import time

import paramiko


def main():
    host, port, user, key_file, count, seconds = sys.argv[1:7]
    key = paramiko.Ed25519Key.from_private_key_file(key_file)
    opened = []
    lock = threading.Lock()
    failures = []

    def one():
        try:
            transport = paramiko.Transport((host, int(port)))
            transport.connect(username=user, pkey=key)
            sftp = paramiko.SFTPClient.from_transport(transport)
            sftp.listdir(".")
            with lock:
                opened.append((transport, sftp))
        except Exception as error:  # counted and reported
            failures.append(repr(error))

    threads = [threading.Thread(target=one) for _ in range(int(count))]
    for thread in threads:
        thread.start()
        time.sleep(0.01)
    for thread in threads:
        thread.join()
    print(f"ready {len(opened)} failed {len(failures)} {failures[:1]}", flush=True)
    time.sleep(float(seconds))
    for transport, _ in opened:
        transport.close()


main()
