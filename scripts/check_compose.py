#!/usr/bin/env python3
"""Validates docker-compose.yml without a Docker engine.

1. Against the Compose specification's JSON Schema (compose_spec.json, as shipped in PyPI's
   docker-compose 1.29.2; path in STREAMFLIX_COMPOSE_SCHEMA or argv[2]).
2. Beyond the schema: every relative bind mount exists in the repository, every `depends_on`
   names a service, and the services the README promises are there.

Usage: check_compose.py [docker-compose.yml] [compose_spec.json]. Exit 0 and "ok" when valid.
"""
import json
import os
import sys

import jsonschema
import yaml


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "docker-compose.yml"
    schema_path = sys.argv[2] if len(sys.argv) > 2 else os.environ["STREAMFLIX_COMPOSE_SCHEMA"]
    root = os.path.dirname(os.path.abspath(path))
    doc = yaml.safe_load(open(path))
    schema = json.load(open(schema_path))
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    problems = [f"schema: {'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors]
    services = doc.get("services", {})
    for want in ["kafka", "topics", "processor", "replay", "prometheus", "grafana"]:
        if want not in services:
            problems.append(f"missing service {want}")
    for name, svc in services.items():
        for dep in (svc.get("depends_on") or {}):
            if dep not in services:
                problems.append(f"{name}: depends_on unknown service {dep}")
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if src.startswith("./") and "${" not in src and not os.path.exists(os.path.join(root, src)):
                problems.append(f"{name}: bind mount source {src} does not exist")
        build = svc.get("build")
        if build:
            ctx = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if not os.path.exists(os.path.join(root, ctx, dockerfile)):
                problems.append(f"{name}: no {dockerfile} in build context {ctx}")
    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"ok: {path} is valid against {os.path.basename(schema_path)} ({len(services)} services)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
