#!/usr/bin/env python3
"""Serves the bare Git repositories under ROOT over HTTP through git's own `git http-backend`
(the smart HTTP protocol Flux's source-controller speaks), read-only, on 127.0.0.1 only.

    git_http.py ROOT PORT

http-backend is a CGI program: each request runs it once with the CGI environment, the request
body on stdin; its output is CGI headers (a `Status:` line among them), a blank line, the body.
Pushes are refused (http-backend allows receive-pack only to an authenticated REMOTE_USER):
the test commits to the bare repository directly, as a merged pull request would.
"""
import http.server
import os
import subprocess
import sys
import urllib.parse


class GitHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root = ""

    def do_GET(self):
        self.run_backend()

    def do_POST(self):
        self.run_backend()

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def run_backend(self):
        path, _, query = self.path.partition("?")
        body = self.read_body()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": self.root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": urllib.parse.unquote(path),
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        for header in ("Git-Protocol", "Content-Encoding"):
            if self.headers.get(header):
                env["HTTP_" + header.upper().replace("-", "_")] = self.headers[header]
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True)
        if out.returncode != 0 and not out.stdout:
            self.send_error(500, out.stderr.decode(errors="replace").strip()[:200])
            return
        sep = b"\r\n\r\n" if b"\r\n\r\n" in out.stdout else b"\n\n"
        head, _, payload = out.stdout.partition(sep)
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, fmt, *args):
        sys.stderr.write("git-http: %s %s\n" % (self.address_string(), fmt % args))


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: git_http.py ROOT PORT")
    GitHandler.root = os.path.abspath(sys.argv[1])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), GitHandler)
    server.serve_forever()


if __name__ == "__main__":
    main()
