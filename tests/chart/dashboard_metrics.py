#!/usr/bin/env python3
"""Checks that every query of a Grafana dashboard and of the documented alert rules finds a series
in what the binaries export, so a panel or an alert on a fresh server shows 0, never "no data".

    dashboard_metrics.py DASHBOARD.json [--alerts METRICS.md] SCRAPE.txt...

SCRAPE.txt are /metrics bodies scraped from the running binaries (OpenMetrics or Prometheus text),
parsed with the Prometheus client library. Each query (panel targets, template variables, and the
`expr:` lines of the YAML blocks in METRICS.md) must name at least one metric, and every selector
it makes must match an exported sample: the metric name, and each label matcher with a literal
value (`result="failed"`, `subject="network"`) on a label the sample carries. Matchers on labels
the scrape does not carry (`namespace`, `pod`, added by Prometheus from the target) or with a
Grafana variable (`=~"$ftpserver"`) are left to the target. Prints what is missing and exits 1,
else prints the metrics queried and exits 0.
"""
import json
import re
import sys

from prometheus_client.openmetrics import parser as openmetrics
from prometheus_client import parser as prometheus

SAMPLE_SUFFIXES = {
    "counter": ["_total", "_created"],
    "histogram": ["_bucket", "_sum", "_count", "_created"],
    "summary": ["", "_sum", "_count", "_created"],
    "gaugehistogram": ["_bucket", "_gsum", "_gcount"],
    "info": ["_info"],
}
# PromQL words that are not metric names when they are not followed by "(".
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "inf", "nan"}
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def exported(paths):
    """Sample name -> list of label dicts, one per exported sample."""
    samples = {}
    for path in paths:
        text = open(path).read()
        parse = openmetrics.text_string_to_metric_families if "# EOF" in text else prometheus.text_string_to_metric_families
        for family in parse(text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append(dict(sample.labels))
    return samples


def alert_queries(path):
    """(where, PromQL) for each `expr:` of the YAML blocks in a Markdown file."""
    for number, line in enumerate(open(path), 1):
        m = re.match(r"\s*expr:\s*(.+?)\s*$", line)
        if m:
            yield f"{path}:{number}", m.group(1).strip("'\"")


SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def unmatched(expr, samples):
    """Selectors of `expr` whose literal label matchers no exported sample satisfies."""
    problems = []
    for name, body in SELECTOR.findall(expr):
        if name not in samples:
            continue  # reported as not exported
        wanted = [(label, op, value) for label, op, value in MATCHER.findall(body) if "$" not in value]
        def fits(labels):
            for label, op, value in wanted:
                if label not in labels:
                    if op in ("=", "=~") and not any(label in other for other in samples[name]):
                        continue  # a target label Prometheus adds
                    if op in ("=", "=~"):
                        return False
                    continue
                have = labels[label]
                if op == "=" and have != value or op == "!=" and have == value:
                    return False
                if op == "=~" and not re.fullmatch(value, have) or op == "!~" and re.fullmatch(value, have):
                    return False
            return True
        if not any(fits(labels) for labels in samples[name]):
            problems.append(f"{name}{{{body}}} matches no exported series")
    return problems


def queries(dashboard):
    """(where, PromQL) for every panel target and query variable."""
    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))
    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield f"panel {panel.get('title')!r} target {target.get('refId')}", target["expr"]
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if query:
            yield f"variable ${var['name']}", query


def metric_names(expr):
    """Metric names in one PromQL expression (or Grafana's label_values(METRIC, LABEL))."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)           # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)                      # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)                     # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"label_values\(\s*([^,()]+)(?:,[^)]*)?\)", r" \1 ", s)  # Grafana: metric, label
    s = re.sub(r"\$\{?\w+\}?", " ", s)                     # Grafana variables
    names = []
    for m in IDENT.finditer(s):
        word = m.group(0)
        rest = s[m.end():].lstrip()
        if rest.startswith("(") or word.lower() in KEYWORDS:
            continue  # a function or aggregation, or an operator word
        if s[max(m.start() - 1, 0)].isdigit():
            continue  # a duration's unit (5m) or an exponent
        names.append(word)
    return names


def main():
    args = sys.argv[1:]
    alerts = None
    if "--alerts" in args:
        at = args.index("--alerts")
        alerts = args[at + 1]
        del args[at:at + 2]
    if len(args) < 2:
        sys.exit("usage: dashboard_metrics.py DASHBOARD.json [--alerts METRICS.md] SCRAPE.txt...")
    dashboard = json.load(open(args[0]))
    have = exported(args[1:])
    every = list(queries(dashboard))
    problems, charted = [], set()
    if alerts:
        found = list(alert_queries(alerts))
        if not found:
            problems.append(f"{alerts} has no alert rule (expr:)")
        every += found
    for where, expr in every:
        names = metric_names(expr)
        if not names:
            problems.append(f"{where}: queries no metric: {expr}")
        for name in names:
            charted.add(name)
            if name not in have:
                problems.append(f"{where}: {name} is not exported by the binaries ({expr})")
        problems += [f"{where}: {problem} ({expr})" for problem in unmatched(expr, have)]
    if not charted:
        problems.append("the dashboard queries nothing")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print("charted: " + " ".join(sorted(charted)))


if __name__ == "__main__":
    main()
