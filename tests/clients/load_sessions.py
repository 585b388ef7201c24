"""Logged-in FTP sessions under load, for the load tier on the real node (scripts/test-load.sh).

usage: load_sessions.py sequential HOST USER PASSWORD CAFILE SESSIONS SOURCE SEED SEED_SHA256 RETRS
  SESSIONS sessions one after another from SOURCE, each: log in (plain FTP and FTPS by turns),
  LIST (which must show SEED), RETR SEED RETRS times, STOR a file of its own and RETR it back.

usage: load_sessions.py concurrent HOST USER PASSWORD CAFILE SESSIONS SOURCE[,SOURCE...] SEED SEED_SHA256
  SESSIONS sessions at once, spread over the SOURCE addresses (bound as the clients' own), half
  plain and half FTPS: all log in at the same moment (no client-side pacing: the server queues
  the verifications), wait until every one is in, then each does LIST, RETR SEED, STOR and RETR back.

Every byte is checked: RETR of SEED against SEED_SHA256, each upload against what was sent. FTPS
is explicit (AUTH TLS, PROT P) and resumes the control connection's TLS session on each data
connection, as the server requires by default. Prints one JSON line:
  {"sessions", "ok", "failed", "downloads", "uploads", "seconds", "errors": [first 5]}
and exits 1 unless every session succeeded. The control port is 21, or FTP_PORT.
"""
import ftplib
import hashlib
import io
import json
import os
import ssl
import sys
import threading
import time

PORT = int(os.environ.get("FTP_PORT", "21"))
TIMEOUT = 90


class ResumingFTP_TLS(ftplib.FTP_TLS):
    """FTP_TLS whose data connections resume the control connection's TLS session."""

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
        return conn, size


class Client:
    def __init__(self, host, user, password, cafile, seed, seed_sha256):
        self.host, self.user, self.password = host, user, password
        self.context = ssl.create_default_context(cafile=cafile)
        self.seed, self.seed_sha256 = seed, seed_sha256
        self.lock = threading.Lock()
        self.ok = self.failed = self.downloads = self.uploads = 0
        self.errors = []

    def login(self, source, tls):
        if tls:
            ftp = ResumingFTP_TLS(context=self.context, timeout=TIMEOUT, source_address=(source, 0))
        else:
            ftp = ftplib.FTP(timeout=TIMEOUT, source_address=(source, 0))
        ftp.connect(self.host, PORT)
        if tls:
            ftp.auth()
        ftp.login(self.user, self.password)
        if tls:
            ftp.prot_p()
        return ftp

    def retr_seed(self, ftp):
        digest = hashlib.sha256()
        ftp.retrbinary(f"RETR {self.seed}", digest.update)
        if digest.hexdigest() != self.seed_sha256:
            raise AssertionError(f"RETR {self.seed}: content differs")
        self.count("downloads")

    def work(self, ftp, name, retrs):
        listing = []
        ftp.retrlines("LIST", listing.append)
        if not any(line.endswith(" " + self.seed) for line in listing):
            raise AssertionError(f"LIST lacks {self.seed}: {listing[:3]}")
        for _ in range(retrs):
            self.retr_seed(ftp)
        body = os.urandom(32 * 1024)
        ftp.storbinary(f"STOR {name}", io.BytesIO(body))
        self.count("uploads")
        back = io.BytesIO()
        ftp.retrbinary(f"RETR {name}", back.write)
        if back.getvalue() != body:
            raise AssertionError(f"RETR {name}: {len(back.getvalue())} bytes, not the {len(body)} stored")
        self.count("downloads")

    def count(self, what):
        with self.lock:
            setattr(self, what, getattr(self, what) + 1)

    def done(self, session, error=None):
        with self.lock:
            if error is None:
                self.ok += 1
            else:
                self.failed += 1
                if len(self.errors) < 5:
                    self.errors.append(f"session {session}: {type(error).__name__}: {error}")

    def report(self, sessions, start):
        print(json.dumps({
            "sessions": sessions, "ok": self.ok, "failed": self.failed,
            "downloads": self.downloads, "uploads": self.uploads,
            "seconds": round(time.monotonic() - start, 1), "errors": self.errors,
        }))
        return 0 if self.ok == sessions and self.failed == 0 else 1


def sequential(client, sessions, source, retrs):
    start = time.monotonic()
    for n in range(sessions):
        try:
            ftp = client.login(source, tls=n % 2 == 1)
            client.work(ftp, f"seq-{n}.bin", retrs)
            ftp.quit()
            client.done(n)
        except Exception as error:  # counted per session; the tier fails on any
            client.done(n, error)
    return client.report(sessions, start)


def concurrent(client, sessions, sources, label):
    start = time.monotonic()
    logged_in = threading.Barrier(sessions, timeout=TIMEOUT)

    def run(n):
        try:
            ftp = client.login(sources[n % len(sources)], tls=n % 2 == 1)
            logged_in.wait()
            client.work(ftp, f"{label}-{n}.bin", 1)
            ftp.quit()
            client.done(n)
        except Exception as error:
            client.done(n, error)
            try:
                logged_in.abort()
            except threading.BrokenBarrierError:
                pass

    threads = [threading.Thread(target=run, args=(n,)) for n in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return client.report(sessions, start)


def main(argv):
    want = {"sequential": 11, "concurrent": 10}
    if len(argv) < 2 or len(argv) != want.get(argv[1]):
        sys.exit(__doc__)
    mode, host, user, password, cafile, sessions, sources, seed, seed_sha256 = argv[1:10]
    client = Client(host, user, password, cafile, seed, seed_sha256)
    if mode == "sequential":
        return sequential(client, int(sessions), sources, int(argv[10]))
    label = f"c{len(sources.split(','))}x{sessions}"
    return concurrent(client, int(sessions), sources.split(","), label)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
