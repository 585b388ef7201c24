"""Drives ftp-server with Python's ftplib, the way scripts in the wild do.

usage: ftplib_session.py HOST PORT USER PASSWORD plain|tls|tls-resume [CAFILE]
tls is stock FTP_TLS, whose data connections start fresh TLS sessions; tls-resume resumes the
control connection's session on each data connection, as a server requiring session reuse needs.
Prints "ftplib ok" when every step behaved; any deviation raises.
"""
import ftplib
import io
import os
import ssl
import sys


class ResumingFTP_TLS(ftplib.FTP_TLS):
    """FTP_TLS whose data connections resume the control connection's TLS session."""

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(
                conn, server_hostname=self.host, session=self.sock.session
            )
        return conn, size


host, port, user, password, mode = sys.argv[1:6]
if mode in ("tls", "tls-resume"):
    context = ssl.create_default_context(cafile=sys.argv[6])
    kind = ftplib.FTP_TLS if mode == "tls" else ResumingFTP_TLS
    ftp = kind(context=context, timeout=20)
else:
    ftp = ftplib.FTP(timeout=20)
ftp.trust_server_pasv_ipv4_address = True
ftp.connect(host, int(port))
ftp.login(user, password)
if mode != "plain":
    ftp.prot_p()
assert ftp.pwd() == "/", ftp.pwd()
assert "UTF8" in ftp.sendcmd("FEAT")
assert ftp.sendcmd("SYST").startswith("215")
ftp.voidcmd("NOOP")
ftp.mkd("py dir")
ftp.cwd("py dir")
assert ftp.pwd() == "/py dir"
payload = bytes(range(256)) * 4096
for passive_extended in (False, True):
    ftp.af = 2  # ftplib picks PASV for IPv4; force EPSV through sendcmd below.
    ftp.storbinary("STOR data.bin", io.BytesIO(payload))
assert ftp.size("data.bin") == len(payload)
assert ftp.sendcmd("MDTM data.bin").startswith("213 ")
assert ftp.nlst() == ["data.bin"], ftp.nlst()
facts = dict(ftp.mlsd())
assert facts["data.bin"]["type"] == "file" and facts["data.bin"]["size"] == str(len(payload)), facts
lines = []
ftp.retrlines("LIST", lines.append)
assert len(lines) == 1 and lines[0].endswith(" data.bin"), lines
received = io.BytesIO()
ftp.retrbinary("RETR data.bin", received.write)
assert received.getvalue() == payload
received = io.BytesIO()
ftp.retrbinary("RETR data.bin", received.write, rest=1000)
assert received.getvalue() == payload[1000:]
# FTPLIB_APPEND=refused: the server's storage cannot append (object storage) and must say so.
if os.environ.get("FTPLIB_APPEND") == "refused":
    try:
        ftp.storbinary("APPE data.bin", io.BytesIO(b"tail"))
        raise AssertionError("APPE was accepted")
    except ftplib.error_perm as error:
        assert str(error).startswith("502"), error
    assert ftp.size("data.bin") == len(payload)
else:
    ftp.storbinary("APPE data.bin", io.BytesIO(b"tail"))
    assert ftp.size("data.bin") == len(payload) + 4
ftp.rename("data.bin", "moved.bin")
ftp.delete("moved.bin")
ftp.cwd("..")
ftp.rmd("py dir")
try:
    ftp.retrbinary("RETR ../../etc/passwd", lambda b: None)
    raise AssertionError("escape was allowed")
except ftplib.error_perm as error:
    assert str(error).startswith("550"), error
ftp.quit()
print("ftplib ok")
