#!/usr/bin/env python3
"""Helpers for scripts/bench-controller.sh, talking to the apiserver directly (stdlib only):

  lb     the stand-in cloud load-balancer controller: watches LoadBalancer Services with the
         operator's label and writes an ingress IP into status.loadBalancer as soon as one
         appears, over a few keep-alive connections (one kubectl per Service would cost
         0.1-0.2 s of CPU each on a 2-core machine). On SIGTERM writes a JSON summary.
  stages after all are Ready: per stage of the pipeline (controller, kube-controller-manager,
         scheduler, kwok, stand-in LB), seconds from T0 at which it finished, p50 and last over
         the servers, from creationTimestamps, condition transition and managedFields times
         (the apiserver's 1 s resolution).
  secrets COUNT KIB NAMESPACE... creates COUNT Secrets of KIB KiB of random data each, spread
         over the namespaces, shaped like Helm release Secrets (type helm.sh/release.v1,
         labels owner=helm): the unrelated Secrets of a busy cluster, which no FtpServer names.
         Prints a JSON summary (count, bytes, seconds).
  ready  watches FtpServers with the benchmark's label until N of them are Ready
         (condition Ready=True and status.observedGeneration == metadata.generation);
         prints a JSON summary with the time of each relative to T0.

Environment: APISERVER (https://127.0.0.1:PORT), PKI (dir with ca.crt, admin.crt, admin.key).
"""

import http.client
import json
import os
import queue
import signal
import ssl
import sys
import threading
import time
import urllib.parse

APISERVER = urllib.parse.urlsplit(os.environ["APISERVER"])
PKI = os.environ["PKI"]


def connect():
    context = ssl.create_default_context(cafile=os.path.join(PKI, "ca.crt"))
    context.load_cert_chain(os.path.join(PKI, "admin.crt"), os.path.join(PKI, "admin.key"))
    return http.client.HTTPSConnection(APISERVER.hostname, APISERVER.port, context=context, timeout=60)


def headers(user_agent, extra=None):
    h = {"Accept": "application/json", "User-Agent": user_agent}
    h.update(extra or {})
    return h


def watch(path, selector, user_agent, on_event):
    """Lists, then watches from the list's resourceVersion; calls on_event(type, obj) for each.
    Returns when on_event returns True."""
    conn = connect()
    query = urllib.parse.urlencode({"labelSelector": selector})
    conn.request("GET", f"{path}?{query}", headers=headers(user_agent))
    response = conn.getresponse()
    body = json.loads(response.read())
    if response.status != 200:
        raise SystemExit(f"list {path}: {response.status} {body}")
    for item in body["items"]:
        if on_event("ADDED", item):
            return
    version = body["metadata"]["resourceVersion"]
    while True:
        query = urllib.parse.urlencode({
            "labelSelector": selector, "watch": "1", "resourceVersion": version,
            "allowWatchBookmarks": "true", "timeoutSeconds": "600",
        })
        conn.request("GET", f"{path}?{query}", headers=headers(user_agent))
        response = conn.getresponse()
        if response.status != 200:
            raise SystemExit(f"watch {path}: {response.status} {response.read()[:500]}")
        for line in response:
            event = json.loads(line)
            obj = event["object"]
            if event["type"] == "ERROR":
                raise SystemExit(f"watch {path}: {obj}")
            version = obj["metadata"]["resourceVersion"]
            if event["type"] != "BOOKMARK" and on_event(event["type"], obj):
                return
        response.close()


def cmd_lb(summary_path, workers=4):
    user_agent = "bench-stand-in-lb"
    pending = queue.Queue()
    seen = {}  # key -> monotonic time first seen without an address
    done = {}  # key -> (seen, patch started, patched)
    lock = threading.Lock()
    ip_of = {}

    def on_event(kind, svc):
        if kind == "DELETED" or svc.get("spec", {}).get("type") != "LoadBalancer":
            return False
        if svc.get("status", {}).get("loadBalancer", {}).get("ingress"):
            return False
        key = (svc["metadata"]["namespace"], svc["metadata"]["name"])
        with lock:
            if key in seen:
                return False
            seen[key] = time.monotonic()
            n = len(ip_of)
            ip_of[key] = f"198.18.{n // 250}.{n % 250 + 1}"  # RFC 2544 benchmarking range
        pending.put(key)
        return False

    def worker():
        conn = connect()
        while True:
            key = pending.get()
            ns, name = key
            body = json.dumps({"status": {"loadBalancer": {"ingress": [{"ip": ip_of[key]}]}}})
            started = time.monotonic()
            for attempt in range(5):
                try:
                    conn.request(
                        "PATCH", f"/api/v1/namespaces/{ns}/services/{name}/status", body=body,
                        headers=headers(user_agent, {"Content-Type": "application/merge-patch+json"}))
                    response = conn.getresponse()
                    response.read()
                    if response.status < 300:
                        break
                    print(f"lb: patch {ns}/{name}: {response.status}", file=sys.stderr)
                except (OSError, http.client.HTTPException) as err:
                    print(f"lb: patch {ns}/{name}: {err}", file=sys.stderr)
                    conn.close()
                    conn = connect()
                time.sleep(0.1 * (attempt + 1))
            with lock:
                done[key] = (seen[key], started, time.monotonic())

    def write_summary(*_):
        with lock:
            rows = list(done.values())
        latencies = sorted(end - s for s, _, end in rows)
        summary = {
            "services_patched": len(rows),
            # Seconds the stand-in spent in PATCH calls (summed over its workers).
            "patch_seconds_total": round(sum(end - start for _, start, end in rows), 3),
            # From the first Service seen to the last address written.
            "span_seconds": round(max(e for _, _, e in rows) - min(s for s, _, _ in rows), 3) if rows else 0,
            # Per Service: seen without an address -> address written.
            "latency_p50": round(latencies[len(latencies) // 2], 3) if latencies else 0,
            "latency_max": round(latencies[-1], 3) if latencies else 0,
            "cpu_seconds": round(time.process_time(), 3),
        }
        with open(summary_path, "w") as f:
            json.dump(summary, f)
        os._exit(0)

    signal.signal(signal.SIGTERM, write_summary)
    for _ in range(workers):
        threading.Thread(target=worker, daemon=True).start()
    watch("/api/v1/services", "app.kubernetes.io/managed-by=ftp-operator", user_agent, on_event)


def cmd_ready(selector, n, t0, timeout):
    """t0: wall-clock seconds (time.time()) the apply started."""
    n, t0, timeout = int(n), float(t0), float(timeout)
    ready_at = {}

    def is_ready(obj):
        status = obj.get("status") or {}
        if status.get("observedGeneration") != obj["metadata"].get("generation"):
            return False
        return any(c.get("type") == "Ready" and c.get("status") == "True"
                   and c.get("observedGeneration", status.get("observedGeneration"))
                   == obj["metadata"].get("generation")
                   for c in status.get("conditions") or [])

    def on_event(kind, obj):
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if kind != "DELETED" and is_ready(obj):
            ready_at.setdefault(key, time.time() - t0)
        else:
            ready_at.pop(key, None)
        return len(ready_at) >= n

    def give_up():
        print(json.dumps({"ready": len(ready_at), "n": n, "timed_out": True,
                          "seconds": round(time.time() - t0, 3)}), flush=True)
        os._exit(1)

    threading.Timer(timeout, give_up).start()
    watch("/apis/ftpoperator.dev/v1alpha1/ftpservers", selector, "bench-ready-watch", on_event)
    times = sorted(ready_at.values())
    print(json.dumps({
        "ready": len(times), "n": n, "timed_out": False,
        "seconds": round(times[-1], 3),
        "first": round(times[0], 3), "p50": round(times[len(times) // 2], 3),
        "p90": round(times[int(len(times) * 0.9) - 1], 3),
    }), flush=True)
    os._exit(0)


def get(path, selector=""):
    conn = connect()
    query = urllib.parse.urlencode({"labelSelector": selector}) if selector else ""
    conn.request("GET", f"{path}?{query}", headers=headers("bench-stages"))
    response = conn.getresponse()
    body = json.loads(response.read())
    if response.status != 200:
        raise SystemExit(f"get {path}: {response.status} {body}")
    return body["items"]


def cmd_stages(t0):
    from datetime import datetime
    t0 = float(t0)

    def ts(value):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() - t0 if value else None

    def key(obj):
        return obj["metadata"]["namespace"], obj["metadata"]["name"]

    def owner(obj):
        refs = obj["metadata"].get("ownerReferences") or [{}]
        return obj["metadata"]["namespace"], refs[0].get("name")

    def condition(obj, type_):
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c["type"] == type_ and c["status"] == "True":
                return ts(c.get("lastTransitionTime"))
        return None

    def managed(obj, manager, subresource=""):
        times = [ts(f["time"]) for f in obj["metadata"].get("managedFields") or []
                 if f.get("manager") == manager and f.get("subresource", "") == subresource]
        return max(times) if times else None

    managed_sel = "app.kubernetes.io/managed-by=ftp-operator"
    servers = {key(o): o for o in get("/apis/ftpoperator.dev/v1alpha1/ftpservers", "bench=controller")}
    # Each server runs as a StatefulSet of its name, whose pods kube-controller-manager makes.
    sets = {owner(o): o for o in get("/apis/apps/v1/statefulsets", managed_sel)}
    services = {owner(o): o for o in get("/api/v1/services", managed_sel)}
    set_to_server = {key(s): srv for srv, s in sets.items()}
    pods = {}
    for pod in get("/api/v1/pods", managed_sel):
        pods.setdefault(set_to_server.get(owner(pod)), []).append(pod)

    def set_ready(k):
        status = sets[k].get("status") or {}
        wanted = (sets[k].get("spec") or {}).get("replicas", 1)
        if status.get("readyReplicas", 0) < wanted:
            return None
        return managed(sets[k], "kube-controller-manager", "status")

    stages = {
        "FtpServer created (apply)": lambda k: ts(servers[k]["metadata"]["creationTimestamp"]),
        "Service created (controller)": lambda k: ts(services[k]["metadata"]["creationTimestamp"]),
        "LB address written (stand-in LB)": lambda k: managed(services[k], "bench-stand-in-lb", "status"),
        "StatefulSet created (controller)": lambda k: ts(sets[k]["metadata"]["creationTimestamp"]),
        "Pod created (kcm statefulset)": lambda k: max(ts(p["metadata"]["creationTimestamp"]) for p in pods[k]),
        "Pod scheduled (scheduler)": lambda k: max(condition(p, "PodScheduled") for p in pods[k]),
        "Pod Ready (kwok)": lambda k: max(condition(p, "Ready") for p in pods[k]),
        "StatefulSet status last written, all ready (kcm)": set_ready,
        "FtpServer Ready (controller)": lambda k: condition(servers[k], "Ready"),
    }
    rows = []
    for name, stage in stages.items():
        values = []
        for k in servers:
            try:
                value = stage(k)
            except (KeyError, TypeError, ValueError):
                value = None
            if value is not None:
                values.append(value)
        values.sort()
        rows.append({"stage": name, "count": len(values),
                     "p50": round(values[len(values) // 2], 1) if values else None,
                     "last": round(values[-1], 1) if values else None})
    print(json.dumps(rows))


def cmd_secrets(count, kib, *namespaces, workers=4):
    import base64
    count, size = int(count), int(kib) * 1024
    if not namespaces:
        raise SystemExit("secrets: name at least one namespace")
    todo = queue.Queue()
    for i in range(count):
        todo.put(i)
    failures = []
    start = time.monotonic()

    def work():
        conn = connect()
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            namespace = namespaces[i % len(namespaces)]
            secret = {
                "apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
                "metadata": {"name": f"sh.helm.release.v1.unrelated-{i}.v1",
                             "labels": {"owner": "helm", "name": f"unrelated-{i}", "bench": "secrets"}},
                # Random bytes: nothing on the way (etcd, the apiserver) can compress them.
                "data": {"release": base64.b64encode(os.urandom(size)).decode()},
            }
            body = json.dumps(secret)
            for attempt in range(3):
                try:
                    conn.request("POST", f"/api/v1/namespaces/{namespace}/secrets", body=body,
                                 headers=headers("bench-secrets", {"Content-Type": "application/json"}))
                    response = conn.getresponse()
                    text = response.read()
                    if response.status not in (201, 409):
                        failures.append(f"{namespace}/{i}: {response.status} {text[:300]!r}")
                    break
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = connect()
            else:
                failures.append(f"{namespace}/{i}: connection failed 3 times")

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"secrets: {len(failures)} not created, e.g. {failures[:3]}")
    print(json.dumps({"count": count, "bytes": count * size,
                      "seconds": round(time.monotonic() - start, 1)}))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"lb": cmd_lb, "ready": cmd_ready, "stages": cmd_stages, "secrets": cmd_secrets}[command](*args)
