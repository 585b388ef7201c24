"""SFTP session for tests/sftp.rs on asyncssh (Debian's python3-asyncssh), with a key or a password.

usage: asyncssh_sftp.py HOST PORT USER (password PASSWORD | key FILE) KNOWN_HOSTS LOCAL_DIR
Uploads LOCAL_DIR/up.bin as up.bin, renames it, reads it back to LOCAL_DIR/down.bin, lists the
home, tries to read ../outside.txt and to write ../escaped.txt, removes the file; prints one JSON
object of what happened.
"""

import asyncio
import json
import sys
import warnings

warnings.simplefilter("ignore")
import asyncssh  # noqa: E402


async def main():
    host, port, user, method, secret, known_hosts, local = sys.argv[1:8]
    options = {"username": user, "known_hosts": known_hosts}
    if method == "password":
        options.update(password=secret, client_keys=None)
    else:
        options.update(client_keys=[secret])
    report = {}
    async with asyncssh.connect(host, int(port), **options) as connection:
        async with connection.start_sftp_client() as sftp:
            await sftp.put(f"{local}/up.bin", "up.bin")
            await sftp.rename("up.bin", "renamed.bin")
            await sftp.get("renamed.bin", f"{local}/down.bin")
            report["listing"] = sorted(await sftp.listdir("."))
            for name, attempt in [
                ("read_outside", lambda: sftp.get("../outside.txt", f"{local}/stolen.txt")),
                ("write_outside", lambda: sftp.put(f"{local}/up.bin", "../escaped.txt")),
            ]:
                try:
                    await attempt()
                    report[name] = "done"
                except asyncssh.SFTPError as error:
                    report[name] = error.code
            await sftp.remove("renamed.bin")
            report["after_remove"] = sorted(await sftp.listdir("."))
    print(json.dumps(report))


asyncio.run(main())
