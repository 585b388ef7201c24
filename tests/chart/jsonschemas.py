#!/usr/bin/env python3
"""Writes the JSON schemas kubeconform validates the rendered chart against, made here from what
the API server itself publishes, nothing downloaded:

    jsonschemas.py OPENAPI_V2.json CRD.yaml... OUTDIR

- every kind in the API server's OpenAPI v2 document (`kubectl get --raw /openapi/v2`), and
- every version of each CustomResourceDefinition given (its openAPIV3Schema),

one file per kind and version, named as kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json`
expects (deployment-apps-v1.json, service-v1.json, ftpserver-ftpoperator-v1alpha1.json).

The schemas are strict: an object that lists its properties accepts no others (what `kubectl
apply` and the API server's field validation refuse), unless the schema says it keeps unknown
fields. Kubernetes' two scalar unions, int-or-string and quantities, accept both forms.
"""
import json
import os
import sys

import yaml

REF = "#/definitions/"
INT_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
QUANTITY = {"oneOf": [{"type": "string"}, {"type": "number"}]}


def file_name(group, version, kind):
    # kubeconform: kind lower-cased, then "-" + the group's first label (none for core), "-" + version.
    suffix = "-" + group.split(".")[0] if group else ""
    return f"{kind.lower()}{suffix}-{version}.json".lower()


def strict(node):
    """Returns a copy of one schema node with its objects closed and its scalar unions open."""
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    if node.get("format") == "int-or-string" or node.get("x-kubernetes-int-or-string"):
        return dict(INT_OR_STRING, description=node.get("description", ""))
    out = {}
    for key, value in node.items():
        if key == "format":
            continue  # int32, byte, date-time...: the API server's concern, not a shape
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {name: strict(sub) for name, sub in value.items()}
        else:
            out[key] = strict(value)
    if node.get("nullable"):
        types = out.get("type")
        if isinstance(types, str):
            out["type"] = [types, "null"]
    keeps_unknown = node.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in node and "additionalProperties" not in node and not keeps_unknown:
        out["additionalProperties"] = False
    return out


def reachable(definitions, name):
    """Names of the definitions that `name` refers to, directly or not (itself included)."""
    seen, todo = set(), [name]
    while todo:
        cur = todo.pop()
        if cur in seen or cur not in definitions:
            continue
        seen.add(cur)
        stack = [definitions[cur]]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str) and ref.startswith(REF):
                    todo.append(ref[len(REF):])
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    return seen


def builtin_schemas(openapi):
    definitions = openapi["definitions"]
    # Quantity is a string in the document; manifests also write plain numbers (cpu: 1).
    fixed = {}
    for name, schema in definitions.items():
        if name.endswith("pkg.api.resource.Quantity"):
            fixed[name] = dict(QUANTITY, description=schema.get("description", ""))
        else:
            fixed[name] = schema
    for name, schema in fixed.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            # Only the top-level kinds a manifest can hold (not their List or options types).
            if "apiVersion" not in schema.get("properties", {}) or gvk["kind"].endswith("List"):
                continue
            doc = strict(schema)
            needed = reachable(fixed, name) - {name}
            doc["definitions"] = {n: strict(fixed[n]) for n in sorted(needed)}
            yield file_name(gvk["group"], gvk["version"], gvk["kind"]), doc


def crd_schemas(crd):
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        doc = strict(schema)
        # The API server adds these to every custom resource's schema.
        props = doc.setdefault("properties", {})
        props["apiVersion"] = {"type": "string", "enum": [f"{group}/{version['name']}"]}
        props["kind"] = {"type": "string", "enum": [kind]}
        props["metadata"] = {"type": "object"}
        yield file_name(group, version["name"], kind), doc


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: jsonschemas.py OPENAPI_V2.json [CRD.yaml...] OUTDIR")
    openapi_path, crd_paths, outdir = sys.argv[1], sys.argv[2:-1], sys.argv[-1]
    os.makedirs(outdir, exist_ok=True)
    written = 0
    with open(openapi_path) as f:
        schemas = list(builtin_schemas(json.load(f)))
    for path in crd_paths:
        with open(path) as f:
            for crd in yaml.safe_load_all(f):
                if crd and crd.get("kind") == "CustomResourceDefinition":
                    schemas.extend(crd_schemas(crd))
    for name, doc in schemas:
        doc["$schema"] = "http://json-schema.org/draft-04/schema#"
        with open(os.path.join(outdir, name), "w") as f:
            json.dump(doc, f)
        written += 1
    if written == 0:
        sys.exit("no schemas written: the OpenAPI document has no kinds")
    print(f"{written} schemas in {outdir}")


if __name__ == "__main__":
    main()
