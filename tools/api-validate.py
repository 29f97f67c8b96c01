#!/usr/bin/env python3
"""Checks API replies against docs/openapi.yaml with a real OpenAPI validator (openapi-core), and
the Firecracker-shaped schemas' field names against Firecracker's (its swagger definitions).

usage: api-validate.py SPEC EXCHANGES.json
EXCHANGES.json: a list of {"method", "path", "status", "body"} (body: the reply's text), and
"content_type" when it is not application/json.
Exits 0 when every reply matches its operation's response schema, 1 with one line per mismatch."""
import json, sys
import yaml
from openapi_core import OpenAPI
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_core.testing import MockRequest, MockResponse
from openapi_schema_validator import OAS30Validator

# Firecracker's definitions (src/firecracker/swagger/firecracker.yaml): the fields each may have.
FIRECRACKER_FIELDS = {
    "InstanceInfo": {"app_name", "id", "state", "vmm_version"},
    "FirecrackerVersion": {"firecracker_version"},
    "MachineConfiguration": {"cpu_template", "smt", "mem_size_mib", "track_dirty_pages", "vcpu_count", "huge_pages"},
    "BootSource": {"boot_args", "initrd_path", "kernel_image_path"},
    "InstanceActionInfo": {"action_type"},
    "Vm": {"state"},
    "Balloon": {"amount_mib", "deflate_on_oom", "stats_polling_interval_s", "free_page_hinting", "free_page_reporting"},
    "BalloonUpdate": {"amount_mib"},
    "BalloonStatsUpdate": {"stats_polling_interval_s"},
    "BalloonStats": {"target_pages", "actual_pages", "target_mib", "actual_mib", "swap_in", "swap_out", "major_faults",
                     "minor_faults", "free_memory", "total_memory", "available_memory", "disk_caches",
                     "hugetlb_allocations", "hugetlb_failures", "oom_kill", "alloc_stall", "async_scan", "direct_scan",
                     "async_reclaim", "direct_reclaim"},
    "FullVmConfiguration": {"balloon", "drives", "boot-source", "cpu-config", "logger", "machine-config", "metrics",
                            "memory-hotplug", "mmds-config", "network-interfaces", "pmem", "vsock", "entropy"},
    "Error": {"fault_message"},
    "Metrics": {"metrics_path"},
    "Logger": {"level", "log_path", "show_level", "show_log_origin", "module"},
    "SnapshotCreateParams": {"mem_file_path", "snapshot_path", "snapshot_type", "version"},
    "SnapshotLoadParams": {"enable_diff_snapshots", "track_dirty_pages", "mem_file_path", "mem_backend", "snapshot_path",
                           "resume_vm", "network_overrides"},
}

spec_path, exchanges_path = sys.argv[1], sys.argv[2]
with open(spec_path) as f:
    spec = yaml.safe_load(f)
failures = []
schemas = spec["components"]["schemas"]
for name, fields in FIRECRACKER_FIELDS.items():
    ours = set(schemas.get(name, {}).get("properties", {}))
    if not ours:
        failures.append(f"schema {name}: missing from {spec_path}")
    elif ours - fields:
        failures.append(f"schema {name}: fields Firecracker does not have: {sorted(ours - fields)}")

api = OpenAPI.from_dict(spec)
with open(exchanges_path) as f:
    exchanges = json.load(f)
for exchange in exchanges:
    request = MockRequest("http://localhost", exchange["method"].lower(), exchange["path"])
    body = exchange["body"].encode()
    kind = exchange.get("content_type") or "application/json"
    response = MockResponse(data=body, status_code=exchange["status"], content_type=kind if body else None)
    try:
        api.validate_response(request, response)
    except (PathNotFound, OperationNotFound):
        # No operation to check against: it must be 404 (no such path) or 405 (wrong method)
        # with the Error body.
        expected = 404 if not any(exchange["path"] == path for path in spec["paths"]) else 405
        errors = list(OAS30Validator(schemas["Error"]).iter_errors(json.loads(exchange["body"] or "null")))
        if exchange["status"] != expected or errors:
            failures.append(f"{exchange['method']} {exchange['path']} -> {exchange['status']} (expected {expected}): "
                            + "; ".join(e.message for e in errors))
    except Exception as error:  # the validator's own errors say which field and why
        detail = "; ".join(str(e) for e in getattr(error, "schema_errors", [])) or str(error)
        failures.append(f"{exchange['method']} {exchange['path']} -> {exchange['status']} {exchange['body'][:200]}: {detail}")
for line in failures:
    print(line)
print(f"api-validate: {len(exchanges)} replies checked, {len(failures)} failure(s)")
sys.exit(1 if failures else 0)
