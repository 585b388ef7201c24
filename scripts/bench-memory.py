#!/usr/bin/env python3
"""FTP clients on loopback (ftplib) and the resident memory of the server they talk to, for
scripts/bench-memory.sh and scripts/soak-memory.sh (stdlib only). Every subcommand prints JSON.

  logins   RSS after 1, 100, 1000, 10 000 sequential logins (cumulative; each USER, PASS, QUIT),
           then after 1, 10, 50 concurrent logins on top (all connected first, then all log in at
           once), with the peak while they ran.
  model    the memory model's terms, each an RSS delta divided by how many caused it: the base
           (no session), the first and second verification slot, an idle session (plain, and
           after AUTH TLS), a transfer in flight (plain RETR and STOR, TLS RETR and STOR: a client
           that stops reading or writing halfway, so the server holds its buffers).
  mix      a transfer mix (RETR and STOR, plain and TLS, concurrent), RSS after each round.
  soak     SECONDS of mixed use (logins, LIST, RETR, STOR, FTPS, wrong passwords from a few
           127.0.0.x addresses), RSS every --every seconds.
  table    merges the JSON of `logins` runs into the markdown table of docs/benchmarks.md.

Memory of a server that forks (vsftpd) is its whole process tree: the sum of RSS, and of PSS
(shared pages counted once), which is what its cgroup is charged for.
"""

import argparse
import ftplib
import io
import json
import os
import random
import socket
import ssl
import sys
import threading
import time

MIB = 1024 * 1024


# --- memory -------------------------------------------------------------------------------

def children():
    """parent pid -> [child pids], from /proc."""
    tree = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(name))
    return tree


def status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory(pid):
    """RSS and PSS of pid and its descendants, the root's VmHWM, in MiB."""
    tree = children()
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(tree.get(p, []))
    return {
        "rss": round(sum(status_kib(p, "VmRSS") for p in pids) / 1024, 1),
        "pss": round(sum(pss_kib(p) for p in pids) / 1024, 1),
        "hwm": round(status_kib(pid, "VmHWM") / 1024, 1),
        "processes": len(pids),
    }


class Peak:
    """Samples memory(pid) in the background; .peak is the largest tree PSS and RSS seen."""

    def __init__(self, pid, every=0.05):
        self.pid, self.every = pid, every
        self.peak = {"rss": 0.0, "pss": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            m = memory(self.pid)
            for key in ("rss", "pss"):
                self.peak[key] = max(self.peak[key], m[key])
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def settled(pid, seconds=1.0):
    time.sleep(seconds)
    return memory(pid)


def socket_buffers_mib(pid):
    """Bytes the kernel holds in pid's TCP sockets (receive queue + send queue), in MiB: not
    RSS, but charged to a cgroup v2 (a Kubernetes pod) with the rest."""
    import subprocess
    out = subprocess.run(["ss", "-tnmpH"], capture_output=True, text=True).stdout
    total, keep = 0, False
    for line in out.splitlines():
        if not line.startswith(("\t", " ")):
            keep = f"pid={pid}," in line
            continue
        if keep and "skmem:(" in line:
            fields = line.split("skmem:(")[1].split(")")[0].split(",")
            for field in fields:
                if field[:1] in ("r", "w") and field[1:].isdigit():
                    total += int(field[1:])
    return round(total / MIB, 1)


# --- clients ------------------------------------------------------------------------------

class ResumingFTP_TLS(ftplib.FTP_TLS):
    """FTP_TLS whose data connections resume the control connection's TLS session."""

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
        return conn, size


def tls_context(args):
    context = ssl.create_default_context(cafile=args.cafile)
    context.check_hostname = False
    return context


def client(args, tls=False, source="127.0.0.1", timeout=120):
    ftp = ResumingFTP_TLS(context=tls_context(args), timeout=timeout) if tls else ftplib.FTP(timeout=timeout)
    ftp.trust_server_pasv_ipv4_address = True
    ftp.connect(args.host, args.port, source_address=(source, 0))
    return ftp


def login(args, tls=False, source="127.0.0.1", password=None):
    ftp = client(args, tls, source)
    ftp.login(args.user, args.password if password is None else password)
    if tls:
        ftp.prot_p()
    return ftp


def one_login(args):
    ftp = login(args)
    ftp.quit()


def parallel(count, work, tolerate=False):
    """Runs work(i) in count threads; raises the first failure, or with tolerate returns them
    all (an older server that refuses some logins is measured, not aborted)."""
    errors = []

    def run(i):
        try:
            work(i)
        except Exception as e:  # collected and raised below, with the thread's number
            errors.append(f"{i}: {e!r}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors and not tolerate:
        raise SystemExit(f"{len(errors)} of {count} failed, first: {errors[0]}")
    return errors


# --- logins -------------------------------------------------------------------------------

def cmd_logins(args):
    result = {"start": settled(args.pid, 0.5), "sequential": {}, "concurrent": {}}
    done = 0
    for target in args.sequential:
        started = time.monotonic()
        while done < target:
            one_login(args)
            done += 1
        result["sequential"][target] = settled(args.pid) | {"seconds": round(time.monotonic() - started, 1)}
        print(f"  {target} sequential: {result['sequential'][target]}", file=sys.stderr)
    for count in args.concurrent:
        conns = [client(args) for _ in range(count)]
        barrier = threading.Barrier(count)

        def work(i):
            barrier.wait()
            conns[i].login(args.user, args.password)
            conns[i].quit()

        started = time.monotonic()
        with Peak(args.pid) as peak:
            failed = parallel(count, work, tolerate=True)
        for conn in conns:
            conn.close()
        after = settled(args.pid)
        result["concurrent"][count] = after | {
            "failed": len(failed), "first_failure": failed[0] if failed else None,
            "peak_rss": peak.peak["rss"], "peak_pss": peak.peak["pss"],
            "seconds": round(time.monotonic() - started, 1),
        }
        print(f"  {count} concurrent: {result['concurrent'][count]}", file=sys.stderr)
    print(json.dumps(result))


# --- model --------------------------------------------------------------------------------

def open_sessions(args, count, tls):
    sessions = [None] * count

    def work(i):
        sessions[i] = login(args, tls)

    # A few at a time: the verifier runs one or two anyway.
    for start in range(0, count, 10):
        parallel(min(10, count - start), lambda i, s=start: work(s + i))
    return sessions


def close_all(sessions, conns=()):
    for conn in conns:
        try:
            conn.close()
        except OSError:
            pass
    for ftp in sessions:
        try:
            ftp.close()
        except OSError:
            pass


def stalled_transfers(sessions, kind):
    """Starts a transfer on each session and leaves it stalled: RETR not read after the first
    chunk, STOR with one chunk written."""
    conns = []
    for i, ftp in enumerate(sessions):
        if kind == "RETR":
            conn = ftp.transfercmd("RETR big.bin")
            conn.recv(65536)
        else:
            conn = ftp.transfercmd(f"STOR up/stalled-{i}-{random.randrange(1 << 30)}.bin")
            conn.sendall(os.urandom(1024 * 1024))
        conns.append(conn)
    return conns


def cmd_model(args):
    pid, n_idle, n_transfers = args.pid, args.idle, args.transfers
    out = {"base": settled(pid, 1.0)}
    one_login(args)
    out["after_1_login"] = settled(pid)
    parallel(2, lambda i: one_login(args))
    parallel(2, lambda i: one_login(args))
    out["after_2_concurrent"] = settled(pid)
    # Warm: the runtime's threads and the TLS machinery exist before the deltas are taken.
    close_all(open_sessions(args, 10, True))
    warm = settled(pid)
    out["warm"] = warm
    for tls in (False, True):
        name = "tls" if tls else "plain"
        before = settled(pid)
        sessions = open_sessions(args, n_idle, tls)
        during = settled(pid, 2.0)
        out[f"idle_{name}"] = {
            "sessions": n_idle, "before": before, "during": during,
            "per_session_kib": round((during["pss"] - before["pss"]) * 1024 / n_idle, 1),
        }
        close_all(sessions)
        out[f"idle_{name}"]["after_close"] = settled(pid, 2.0)
        print(f"  idle {name}: {out[f'idle_{name}']['per_session_kib']} KiB", file=sys.stderr)
    for tls in (False, True):
        for kind in ("RETR", "STOR"):
            name = f"{'tls' if tls else 'plain'}_{kind.lower()}"
            sessions = open_sessions(args, n_transfers, tls)
            idle = settled(pid, 2.0)
            conns = stalled_transfers(sessions, kind)
            with Peak(pid) as peak:
                time.sleep(3.0)
            during = memory(pid)
            out[name] = {
                "transfers": n_transfers, "idle": idle, "during": during, "peak_pss": peak.peak["pss"],
                "per_transfer_kib": round((max(during["pss"], peak.peak["pss"]) - idle["pss"]) * 1024 / n_transfers, 1),
                "socket_buffers_mib": socket_buffers_mib(pid),
            }
            close_all(sessions, conns)
            out[name]["after_close"] = settled(pid, 2.0)
            print(f"  {name}: {out[name]['per_transfer_kib']} KiB, sockets {out[name]['socket_buffers_mib']} MiB",
                  file=sys.stderr)
    print(json.dumps(out))
    if args.model_file:
        check_model(out, args.model_file)


def check_model(out, model_file):
    """Fails when a measured term exceeds what src/ftp/memory.rs counts for it."""
    import re
    with open(model_file) as f:
        source = f.read()
    base_mib = int(re.search(r"BASE_BYTES: u64 = (\d+) \* MIB", source).group(1))
    session_kib = int(re.search(r"SESSION_BYTES: u64 = (\d+) \* 1024", source).group(1))
    slots = out["after_2_concurrent"]["rss"] - out["base"]["rss"]
    # What stays once every session has closed, the verification slots taken away.
    base = max(out["base"]["rss"], out["tls_stor"]["after_close"]["rss"] - slots)
    transfer = max(out[k]["per_transfer_kib"] for k in ("plain_retr", "plain_stor", "tls_retr", "tls_stor"))
    session = out["idle_tls"]["per_session_kib"] + transfer
    print(f"model: base {base:.1f} MiB measured, {base_mib} counted; worst session {session:.0f} KiB "
          f"measured, {session_kib} counted", file=sys.stderr)
    if base > base_mib or session > session_kib:
        raise SystemExit("model: a measured term exceeds src/ftp/memory.rs: raise its constants")


# --- mix and soak -------------------------------------------------------------------------

def transfer_round(args, tls, i, source="127.0.0.1"):
    """One session: login, LIST, RETR the 8 MiB file, STOR 4 MiB and check its size, QUIT."""
    ftp = login(args, tls, source)
    ftp.retrlines("LIST", lambda line: None)
    got = io.BytesIO()
    ftp.retrbinary("RETR mid.bin", got.write, blocksize=65536)
    if got.tell() != args.mid_size:
        raise RuntimeError(f"RETR mid.bin: {got.tell()} bytes, expected {args.mid_size}")
    name = f"up/mix-{os.getpid()}-{i}-{random.randrange(1 << 30)}.bin"
    ftp.storbinary(f"STOR {name}", io.BytesIO(PAYLOAD), blocksize=65536)
    size = ftp.size(name)
    if size != len(PAYLOAD):
        raise RuntimeError(f"STOR {name}: {size} bytes on the server, sent {len(PAYLOAD)}")
    ftp.delete(name)
    ftp.quit()


PAYLOAD = os.urandom(4 * MIB)


def cmd_mix(args):
    out = {"start": settled(args.pid, 0.5), "rounds": []}
    for r in range(args.rounds):
        failed = parallel(args.concurrency, lambda i: transfer_round(args, i % 2 == 1, r * 1000 + i),
                          tolerate=True)
        out["rounds"].append(settled(args.pid) | {"failed": len(failed)})
        print(f"  round {r + 1}: {out['rounds'][-1]}", file=sys.stderr)
    print(json.dumps(out))


def cmd_soak(args):
    deadline = time.monotonic() + args.seconds
    counts = {"sessions": 0, "wrong_passwords": 0, "refused": 0, "errors": 0}
    lock = threading.Lock()
    errors = []

    def count(key):
        with lock:
            counts[key] += 1

    def worker(w):
        sources = [f"127.0.0.{2 + w % 4}", "127.0.0.1"]
        i = 0
        while time.monotonic() < deadline:
            i += 1
            source = sources[i % 2]
            try:
                if i % 7 == 0:
                    # A wrong password from an address of its own, so lockout stays off the
                    # workers' addresses: the soak measures memory, not the lockout.
                    ftp = client(args, source=f"127.0.0.{10 + w}")
                    try:
                        ftp.login(args.user, "not-the-password")
                    except ftplib.error_perm:
                        count("wrong_passwords")
                    ftp.close()
                else:
                    transfer_round(args, i % 3 == 0, w * 1_000_000 + i, source)
                    count("sessions")
            except ftplib.error_temp as e:
                # 421 (a limit) is the server keeping to its budget, counted apart from errors.
                count("refused" if str(e).startswith("421") else "errors")
            except Exception as e:  # counted; the soak fails on any
                count("errors")
                with lock:
                    errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(args.workers)]
    started = time.monotonic()
    for t in threads:
        t.start()
    samples = []
    while time.monotonic() < deadline:
        m = memory(args.pid)
        samples.append({"t": round(time.monotonic() - started), **m, **counts})
        print(f"  t={samples[-1]['t']:4d}s rss={m['rss']:7.1f} MiB hwm={m['hwm']:7.1f} MiB {counts}",
              file=sys.stderr, flush=True)
        time.sleep(args.every)
    for t in threads:
        t.join(timeout=120)
    samples.append({"t": round(time.monotonic() - started), **settled(args.pid, 2.0), **counts})
    print(json.dumps({"samples": samples, "counts": counts, "errors": errors[:10]}))


# --- table --------------------------------------------------------------------------------

def cmd_table(args):
    runs = []
    for spec in args.runs:
        label, path = spec.split("=", 1)
        # FILE:pss for a server that forks: its processes' PSS sum, shared pages counted once.
        path, _, metric = path.partition(":")
        with open(path) as f:
            runs.append((label, json.load(f), metric or "rss"))
    print("| MiB (ftp-server: VmRSS; vsftpd: PSS of all its processes) | "
          + " | ".join(label for label, _, _ in runs) + " |")
    print("|---|" + "---|" * len(runs))

    def row(name, pick):
        print(f"| {name} | " + " | ".join(pick(run, metric) for _, run, metric in runs) + " |")

    def fmt(m, metric, peak=False):
        text = f"{m[metric]:.0f}"
        if peak:
            text += f" (peak {m['peak_' + metric]:.0f})"
        if m.get("failed"):
            text += f", {m['failed']} failed"
        return text

    first = runs[0][1]
    row("started, no session", lambda r, k: fmt(r["start"], k))
    for n in first["sequential"]:
        row(f"after {int(n):,} sequential logins".replace(",", " "), lambda r, k, n=n: fmt(r["sequential"][n], k))
    for n in first["concurrent"]:
        row(f"then {n} concurrent logins", lambda r, k, n=n: fmt(r["concurrent"][n], k, peak=True))
    row("VmHWM of the (listening) process at the end",
        lambda r, k: f"{r['concurrent'][list(r['concurrent'])[-1]]['hwm']:.0f}")
    row("seconds for the sequential logins",
        lambda r, k: f"{sum(v['seconds'] for v in r['sequential'].values()):.0f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def server(p):
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--pid", type=int, required=True, help="the server's (listener's) process")
        p.add_argument("--user", required=True)
        p.add_argument("--password", required=True)
        p.add_argument("--cafile")
        return p

    numbers = lambda text: [int(n) for n in text.split(",")]
    p = server(sub.add_parser("logins"))
    p.add_argument("--sequential", type=numbers, default=[1, 100, 1000, 10000])
    p.add_argument("--concurrent", type=numbers, default=[1, 10, 50])
    p = server(sub.add_parser("model"))
    p.add_argument("--idle", type=int, default=200)
    p.add_argument("--transfers", type=int, default=50)
    p.add_argument("--model-file", help="src/ftp/memory.rs: fail when a measurement exceeds its constants")
    for name in ("mix", "soak"):
        p = server(sub.add_parser(name))
        p.add_argument("--mid-size", type=int, default=8 * MIB)
    sub.choices["mix"].add_argument("--rounds", type=int, default=5)
    sub.choices["mix"].add_argument("--concurrency", type=int, default=20)
    sub.choices["soak"].add_argument("--seconds", type=int, default=600)
    sub.choices["soak"].add_argument("--every", type=float, default=10.0)
    sub.choices["soak"].add_argument("--workers", type=int, default=8)
    p = sub.add_parser("table")
    p.add_argument("runs", nargs="+", help="LABEL=FILE.json")
    args = parser.parse_args()
    {"logins": cmd_logins, "model": cmd_model, "mix": cmd_mix, "soak": cmd_soak, "table": cmd_table}[args.command](args)


if __name__ == "__main__":
    main()
