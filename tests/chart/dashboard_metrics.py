#!/usr/bin/env python3
"""Checks that every metric a Grafana dashboard queries is one the binaries export, under that name.

    dashboard_metrics.py DASHBOARD.json SCRAPE.txt...

SCRAPE.txt are /metrics bodies scraped from the running binaries (OpenMetrics or Prometheus text).
Their families are parsed with the Prometheus client library; each family exports the sample
names its type implies (a counter `x` as `x_total`, a histogram as `x_bucket`/`x_sum`/`x_count`),
so a family registered but not yet incremented counts too. Each query of the dashboard (panel
targets and template variables) must name at least one metric, and every metric it names must be
exported. Prints what is missing and exits 1, else prints the metrics charted and exits 0.
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
    names = set()
    for path in paths:
        text = open(path).read()
        parse = openmetrics.text_string_to_metric_families if "# EOF" in text else prometheus.text_string_to_metric_families
        for family in parse(text):
            for suffix in SAMPLE_SUFFIXES.get(family.type, [""]):
                names.add(family.name + suffix)
            names.update(sample.name for sample in family.samples)
    return names


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
    if len(sys.argv) < 3:
        sys.exit("usage: dashboard_metrics.py DASHBOARD.json SCRAPE.txt...")
    dashboard = json.load(open(sys.argv[1]))
    have = exported(sys.argv[2:])
    problems, charted = [], set()
    for where, expr in queries(dashboard):
        names = metric_names(expr)
        if not names:
            problems.append(f"{where}: queries no metric: {expr}")
        for name in names:
            charted.add(name)
            if name not in have:
                problems.append(f"{where}: {name} is not exported by the binaries ({expr})")
    if not charted:
        problems.append("the dashboard queries nothing")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print("charted: " + " ".join(sorted(charted)))


if __name__ == "__main__":
    main()
