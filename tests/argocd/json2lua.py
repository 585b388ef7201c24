#!/usr/bin/env python3
"""Turns one Kubernetes object (JSON on stdin) into Lua source `obj = {...}`, the global that
Argo CD hands a health script. JSON null becomes nil (absent), as in Argo CD's conversion."""
import json
import sys


def lua(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string literal is a valid Lua string literal
    if isinstance(value, list):
        return "{" + ", ".join(lua(v) for v in value if v is not None) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{json.dumps(k)}] = {lua(v)}" for k, v in value.items() if v is not None) + "}"
    raise TypeError(f"unexpected JSON value {value!r}")


print("obj = " + lua(json.load(sys.stdin)))
