#!/usr/bin/env python3
"""Checks docker-filter's GET /metrics text with Prometheus' own parser.

Usage: metrics_check.py METRICS_FILE EXPECTED_JSON

METRICS_FILE is the body of GET /metrics. EXPECTED_JSON holds:

    {"version": "0.1.0",
     "samples":  [{"name": ..., "labels": {...}, "value": N}, ...],
     "positive": [{"name": ..., "labels": {...}}, ...]}

Every expected sample must be present exactly once with exactly those
labels and that value; every "positive" one must be above zero. On top of
that the exposition itself is checked: each family docker-filter documents
is there with its type and a HELP text, label sets are unique, counters are
whole non-negative numbers, and the allowed requests add up to the rule
hits. Run by tests/metrics.rs with the Python of DOCKER_FILTER_TEST_PYTHON,
which needs the prometheus_client package.

Exit status: 0 when everything holds, 1 otherwise (each problem on stderr).
"""

import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families

# Family name (as the parser reports it: a counter loses its _total) and
# the type docker-filter declares for it.
FAMILIES = {
    "docker_filter_build_info": "gauge",
    "docker_filter_connections_accepted": "counter",
    "docker_filter_connections_active": "gauge",
    "docker_filter_connections_refused": "counter",
    "docker_filter_requests": "counter",
    "docker_filter_rule_hits": "counter",
    "docker_filter_upstream_errors": "counter",
    "docker_filter_bytes": "counter",
}


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        text = f.read()
    with open(argv[2], encoding="utf-8") as f:
        expected = json.load(f)

    problems = []
    families = {}
    for family in text_string_to_metric_families(text):
        if family.name in families:
            problems.append(f"family {family.name} appears twice")
        families[family.name] = family

    samples = {}
    for family in families.values():
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            if key in samples:
                problems.append(f"duplicate sample {sample.name}{sample.labels}")
            samples[key] = sample.value

    for name, kind in FAMILIES.items():
        family = families.get(name)
        if family is None:
            problems.append(f"family {name} is missing")
            continue
        if family.type != kind:
            problems.append(f"family {name} is a {family.type}, not a {kind}")
        if not family.documentation.strip():
            problems.append(f"family {name} has no HELP text")
        if not family.samples:
            problems.append(f"family {name} has no sample")
        for sample in family.samples:
            value = sample.value
            if math.isnan(value) or value < 0 or value != int(value):
                problems.append(f"{sample.name}{sample.labels} = {value} is not a whole count")
            if kind == "counter" and not sample.name.endswith("_total"):
                problems.append(f"counter sample {sample.name} does not end in _total")
    for name in sorted(set(families) - set(FAMILIES)):
        print(f"metrics_check: note: family {name} is not checked here")

    build = families.get("docker_filter_build_info")
    if build is not None:
        versions = [s.labels.get("version") for s in build.samples if s.value == 1]
        if versions != [expected["version"]]:
            problems.append(f"build_info versions {versions}, expected [{expected['version']!r}]")

    requests = families.get("docker_filter_requests")
    if requests is not None:
        seen_reasons = set()
        allowed = 0
        for sample in requests.samples:
            decision = sample.labels.get("decision")
            reason = sample.labels.get("reason")
            # allow (by the whitelist), deny (a refusal) or error (the
            # daemon failed: a 502), each with a reason.
            if decision not in ("allow", "deny", "error") or not reason:
                problems.append(f"requests sample with labels {sample.labels}")
            if decision == "allow":
                allowed += sample.value
            else:
                if reason in seen_reasons:
                    problems.append(f"refusal reason {reason} listed twice")
                seen_reasons.add(reason)
        rules = families.get("docker_filter_rule_hits")
        if rules is not None:
            hits = sum(s.value for s in rules.samples)
            if hits != allowed:
                problems.append(f"rule hits add up to {hits}, allowed requests to {allowed}")
            lines = [s.labels.get("line") for s in rules.samples]
            if len(set(lines)) != len(lines) or not all(line and line.isdigit() for line in lines):
                problems.append(f"rule_hits line labels are not unique numbers: {lines}")

    for item in expected.get("samples", []):
        key = (item["name"], frozenset(item["labels"].items()))
        if key not in samples:
            problems.append(f"missing sample {item['name']}{item['labels']}")
        elif samples[key] != item["value"]:
            problems.append(
                f"{item['name']}{item['labels']} = {samples[key]}, expected {item['value']}"
            )
    for item in expected.get("positive", []):
        key = (item["name"], frozenset(item["labels"].items()))
        if samples.get(key, 0) <= 0:
            problems.append(f"{item['name']}{item['labels']} should be above 0")

    for problem in problems:
        print(f"metrics_check: {problem}", file=sys.stderr)
    if problems:
        return 1
    checked = len(expected.get("samples", [])) + len(expected.get("positive", []))
    print(
        f"metrics_check: ok: {len(families)} families, {len(samples)} samples, "
        f"{checked} expected values"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
