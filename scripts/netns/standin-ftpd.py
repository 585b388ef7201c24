#!/usr/bin/python3
"""A stand-in FTP server (Debian's python3-pyftpdlib) for proving the namespace balancer model bites.

pyftpdlib never turns SO_KEEPALIVE on by itself, like many FTP servers. With --keepalive-idle N the
control socket gets SO_KEEPALIVE + TCP_KEEPIDLE=N (+ INTVL/CNT), which is what ftp-server does.
Anonymous, writable, confined to ROOT; advertises --public in 227 replies.
"""
import argparse
import socket

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

ap = argparse.ArgumentParser()
ap.add_argument("--root", required=True)
ap.add_argument("--listen", default="0.0.0.0:2121")
ap.add_argument("--public", required=True)
ap.add_argument("--passive", default="30000-30009")
ap.add_argument("--keepalive-idle", type=int, default=0)
args = ap.parse_args()


class Handler(FTPHandler):
    def on_connect(self):
        if args.keepalive_idle > 0:
            s = self.socket
            s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, args.keepalive_idle)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 5)


auth = DummyAuthorizer()
auth.add_anonymous(args.root, perm="elradfmw")
Handler.authorizer = auth
Handler.masquerade_address = args.public
lo, hi = (int(x) for x in args.passive.split("-"))
Handler.passive_ports = range(lo, hi + 1)
Handler.timeout = 3600  # pyftpdlib's own idle timeout must not be what ends the session
host, port = args.listen.rsplit(":", 1)
FTPServer((host, int(port)), Handler).serve_forever()
