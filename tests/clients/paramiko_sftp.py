"""SFTP client for tests/sftp.rs, on paramiko (Debian's python3-paramiko).

usage: paramiko_sftp.py HOST PORT USER (password PASSWORD | key FILE) MODE
MODE:
  ops         run the operations of a JSON list read from stdin, print one JSON result each
  concurrent  N sessions at once, each uploading and reading back its own file; prints how many
              came back intact
  malformed   after INIT, send a packet whose fields do not decode; prints whether the server
              ended the session
  oversized   after INIT, announce a packet larger than any limit; same report
  hostkey     print the server's host key fingerprint
  slow_get F  read 64 KiB of F, print "started", wait for a line on stdin, read the rest; prints
              how many bytes came
  get F LOCAL read all of F into LOCAL with read-ahead, as SFTP clients do, printing "started"
              after the first MiB; prints the host key the session saw and how many bytes came
Connection failures print {"connect_error": "..."}. With PROXY_HEADER in the environment, that
line is sent before SSH starts, as a balancer speaking PROXY protocol v1 would.
"""

import json
import os
import socket
import struct
import sys
import threading
import time

import paramiko


def connect(host, port, user, method, secret):
    sock = socket.create_connection((host, port), timeout=20)
    if os.environ.get("PROXY_HEADER"):
        sock.sendall(os.environ["PROXY_HEADER"].encode() + b"\r\n")
    transport = paramiko.Transport(sock)
    transport.banner_timeout = 20
    transport.start_client(timeout=20)
    if method == "password":
        transport.auth_password(user, secret)
    else:
        transport.auth_publickey(user, load_key(secret))
    return transport


def load_key(path):
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key_file(path)
        except paramiko.SSHException:
            continue
    raise SystemExit(f"cannot read key {path}")


def run_op(sftp, op):
    name, args = op[0], op[1:]
    if name == "put":
        sftp.put(args[0], args[1])
        return None
    if name == "get":
        sftp.get(args[0], args[1])
        return None
    if name == "listdir":
        return sorted(sftp.listdir(args[0]))
    if name == "stat":
        st = sftp.stat(args[0])
        return {"size": st.st_size, "mode": st.st_mode}
    if name == "lstat":
        st = sftp.lstat(args[0])
        return {"size": st.st_size, "mode": st.st_mode}
    if name == "rename":
        sftp.rename(args[0], args[1])
        return None
    if name == "remove":
        sftp.remove(args[0])
        return None
    if name == "mkdir":
        sftp.mkdir(args[0])
        return None
    if name == "rmdir":
        sftp.rmdir(args[0])
        return None
    if name == "symlink":
        sftp.symlink(args[0], args[1])
        return None
    if name == "normalize":
        return sftp.normalize(args[0])
    if name == "write":
        with sftp.open(args[0], "wb") as f:
            f.write(args[1].encode())
        return None
    if name == "read":
        with sftp.open(args[0], "rb") as f:
            return f.read().decode(errors="replace")
    raise SystemExit(f"unknown operation {name}")


def ops(transport):
    sftp = paramiko.SFTPClient.from_transport(transport)
    results = []
    for op in json.load(sys.stdin):
        try:
            results.append({"ok": True, "value": run_op(sftp, op)})
        except (IOError, OSError) as error:
            results.append({"ok": False, "errno": getattr(error, "errno", None), "error": str(error)})
    print(json.dumps(results))


def concurrent(args, count):
    payload = os.urandom(256 * 1024)
    good = []
    errors = []
    ready = threading.Barrier(count)

    def one(index):
        try:
            transport = connect(*args)
            sftp = paramiko.SFTPClient.from_transport(transport)
            ready.wait(timeout=60)
            name = f"concurrent-{index}.bin"
            with sftp.open(name, "wb") as f:
                f.write(payload)
            with sftp.open(name, "rb") as f:
                back = f.read()
            if back == payload:
                good.append(index)
            transport.close()
        except Exception as error:  # reported, counted as a failure
            errors.append(repr(error))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"intact": len(good), "errors": errors}))


def raw_channel(transport):
    channel = transport.open_session()
    channel.invoke_subsystem("sftp")
    channel.sendall(struct.pack(">IBI", 5, 1, 3))
    length = struct.unpack(">I", recv_exact(channel, 4))[0]
    recv_exact(channel, length)
    return channel


def recv_exact(channel, count):
    data = b""
    while len(data) < count:
        chunk = channel.recv(count - len(data))
        if not chunk:
            raise EOFError("channel closed")
        data += chunk
    return data


def ended(transport, channel):
    """Whether the server ends the session within 10 s."""
    channel.settimeout(10)
    try:
        while channel.recv(1024):
            pass
    except socket.timeout:
        return False
    except EOFError:
        pass
    deadline = time.time() + 10
    while transport.is_active() and time.time() < deadline:
        time.sleep(0.05)
    return not transport.is_active()


def main():
    host, port, user, method, secret, mode = sys.argv[1:7]
    args = (host, int(port), user, method, secret)
    if mode == "concurrent":
        concurrent(args, int(sys.argv[7]))
        return
    try:
        transport = connect(*args)
    except (paramiko.SSHException, OSError, EOFError) as error:
        print(json.dumps({"connect_error": f"{type(error).__name__}: {error}"}))
        return
    if mode == "ops":
        ops(transport)
    elif mode == "slow_get":
        sftp = paramiko.SFTPClient.from_transport(transport)
        with sftp.open(sys.argv[7], "rb") as f:
            got = len(f.read(65536))
            print("started", flush=True)
            sys.stdin.readline()
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                got += len(chunk)
        print(json.dumps({"bytes": got}))
    elif mode == "get":
        key = transport.get_remote_server_key().get_base64()
        sftp = paramiko.SFTPClient.from_transport(transport)
        got = 0
        with sftp.open(sys.argv[7], "rb") as f, open(sys.argv[8], "wb") as out:
            f.prefetch()
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                if not got:
                    print("started", flush=True)
                got += len(chunk)
                out.write(chunk)
        print(json.dumps({"hostkey": key, "bytes": got}))
    elif mode == "hostkey":
        print(json.dumps({"hostkey": transport.get_remote_server_key().get_base64()}))
    elif mode == "malformed":
        channel = raw_channel(transport)
        # STAT with a request id and a path whose length points past the end of the packet.
        channel.sendall(struct.pack(">IBII", 9, 17, 7, 1000))
        print(json.dumps({"ended": ended(transport, channel)}))
    elif mode == "oversized":
        channel = raw_channel(transport)
        channel.sendall(struct.pack(">IB", 1 << 30, 6))
        print(json.dumps({"ended": ended(transport, channel)}))
    else:
        raise SystemExit(f"unknown mode {mode}")
    transport.close()


if __name__ == "__main__":
    main()
