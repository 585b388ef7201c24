"""SharedKey-signed requests to an Azure Blob endpoint (Azurite in the tests), with no SDK.

usage: azure_blob.py ENDPOINT ACCOUNT KEY create CONTAINER
       azure_blob.py ENDPOINT ACCOUNT KEY list CONTAINER      (one name a line; committed blobs)
The key is the account key, base64, as Azurite's well-known one.
"""
import base64
import hashlib
import hmac
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from email.utils import formatdate

VERSION = "2021-08-06"


def signed(method, endpoint, account, key, path, query):
    url = f"{endpoint.rstrip('/')}/{path}?{urllib.parse.urlencode(query)}"
    date = formatdate(usegmt=True)
    resource_path = urllib.parse.urlparse(url).path
    # VERB, then Content-Encoding, -Language, -Length (empty when 0), -MD5, -Type, Date,
    # If-Modified-Since, If-Match, If-None-Match, If-Unmodified-Since, Range: a line each.
    to_sign = "\n".join([method] + [""] * 11) + "\n"
    to_sign += f"x-ms-date:{date}\nx-ms-version:{VERSION}\n"
    to_sign += f"/{account}{resource_path}"
    for name in sorted(query):
        to_sign += f"\n{name}:{query[name]}"
    digest = hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()
    headers = {
        "x-ms-date": date,
        "x-ms-version": VERSION,
        "Authorization": f"SharedKey {account}:{base64.b64encode(digest).decode()}",
    }
    if method == "PUT":
        headers["Content-Length"] = "0"
    request = urllib.request.Request(url, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=20) as response:
        return response.read().decode()


endpoint, account, key, command, container = sys.argv[1:6]
if command == "create":
    try:
        signed("PUT", endpoint, account, key, container, {"restype": "container"})
    except urllib.error.HTTPError as error:
        if error.code != 409:
            raise SystemExit(f"create {container}: {error.code} {error.read().decode()}")
elif command == "list":
    body = signed("GET", endpoint, account, key, container, {"comp": "list", "restype": "container"})
    for name in re.findall(r"<Name>([^<]*)</Name>", body):
        print(name)
else:
    raise SystemExit(f"unknown command {command}")
