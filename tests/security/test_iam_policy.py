"""The IAM policy in deploy/iam grants exactly the AWS calls the production code makes.

Static scan (ast) of snapship/, activities/, workflows/, starter.py and worker.py for boto3 client
method calls, using the convention documented in deploy/iam/README.md:
- the receiver's last name is `ebs`, `ec2`, `sts` (optionally `_`-prefixed, `_client`-suffixed):
  `ebs.start_snapshot()`, `self.ec2.describe_snapshots()`, `clients.sts.get_caller_identity()`;
- or it is a name/attribute assigned from a call whose function name contains "client" with the
  service as a string argument: `x = make_client(conn, "ec2")`, `self._c = session.client("ebs")`;
- or it is annotated with the boto3-stubs client type (`EBSClient`, `EC2Client`, `STSClient`).
`get_paginator("op")` counts as op; `get_waiter("name")` counts as the waiter's operation.
Method names map to API operations through botocore's own service models (xform_name), and
an unknown method name on a client fails the test (it would fail at run time too).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.session
from botocore import xform_name

ROOT = Path(__file__).resolve().parents[2]
POLICY_PATH = ROOT / "deploy" / "iam" / "snapship-policy.json"
SCANNED = ["snapship", "activities", "workflows", "starter.py", "worker.py"]
SERVICES = ("ebs", "ec2", "sts")
ANNOTATION_SERVICES = {"EBSClient": "ebs", "EC2Client": "ec2", "STSClient": "sts"}
NAME_RE = re.compile(r"^_*(ebs|ec2|sts)(?:_client)?$")
# boto3 client methods that are not API operations.
# snapship's EbsBlockClient: a PUT signed here is sent by a VDDK reader process, so signing it
# needs what sending it needs; settling its outcome and the transport settings make no call.
SIGNED_OPERATIONS = {"sign_put": "PutSnapshotBlock"}
NON_API_METHODS = {
    "settle_put",
    "block_send_options",
    "close",
    "can_paginate",
    "generate_presigned_url",
    "generate_presigned_post",
    "get_paginator",
    "get_waiter",
}

_session = botocore.session.get_session()


def _operation_map(service: str) -> dict[str, str]:
    model = _session.get_service_model(service)
    return {xform_name(op): op for op in model.operation_names}


OPERATIONS = {service: _operation_map(service) for service in SERVICES}


def _waiter_operation(service: str, waiter: str) -> str:
    loader = _session.get_component("data_loader")
    waiters = loader.load_service_model(service, "waiters-2")["waiters"]
    by_snake = {xform_name(name): spec["operation"] for name, spec in waiters.items()}
    return by_snake.get(waiter) or waiters[waiter]["operation"]


@dataclass
class ScanResult:
    calls: dict[str, set[str]] = field(default_factory=dict)  # "ebs:StartSnapshot" -> {where}
    unknown: list[str] = field(default_factory=list)

    def add(self, action: str, where: str) -> None:
        self.calls.setdefault(action, set()).add(where)


def _receiver_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _service_of_client_call(call: ast.expr) -> str | None:
    """`make_client(conn, "ec2")` / `session.client("ebs")` -> service name."""
    if not isinstance(call, ast.Call):
        return None
    func = _receiver_name(call.func)
    if func is None or "client" not in func.lower():
        return None
    for arg in [*call.args, *(k.value for k in call.keywords)]:
        if isinstance(arg, ast.Constant) and arg.value in SERVICES:
            return str(arg.value)
    return None


def _annotation_service(annotation: ast.expr | None) -> str | None:
    if annotation is None:
        return None
    text = ast.unparse(annotation)
    for type_name, service in ANNOTATION_SERVICES.items():
        if re.search(rf"\b{type_name}\b", text):
            return service
    return None


def scan_source(source: str, filename: str, result: ScanResult) -> None:
    tree = ast.parse(source, filename=filename)
    aliases: dict[str, str] = {}
    # First pass: names bound to clients by assignment or annotation.
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            service = _service_of_client_call(node.value)
            if service:
                for target in node.targets:
                    name = _receiver_name(target)
                    if name:
                        aliases[name] = service
        elif isinstance(node, ast.AnnAssign):
            name = _receiver_name(node.target)
            service = _annotation_service(node.annotation) or (
                _service_of_client_call(node.value) if node.value else None
            )
            if name and service:
                aliases[name] = service
        elif isinstance(node, ast.arg):
            service = _annotation_service(node.annotation)
            if service:
                aliases[node.arg] = service
    # Second pass: method calls on those receivers, and bound-method references passed along
    # (`functools.partial(ebs.list_snapshot_blocks, ...)`, `retry(ec2.describe_snapshots)`).
    called_funcs = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    calls = {id(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        receiver = _receiver_name(node.value)
        if receiver is None:
            continue
        match = NAME_RE.match(receiver)
        service = match.group(1) if match else aliases.get(receiver)
        if service is None:
            continue
        method = node.attr
        where = f"{filename}:{node.lineno}"
        if id(node) not in called_funcs:
            # A reference: count it when it names an operation (ignore .meta, .exceptions).
            op = OPERATIONS[service].get(method)
            if op is not None:
                result.add(f"{service}:{op}", where)
            continue
        call = calls[id(node)]
        if method in ("get_paginator", "get_waiter"):
            arg = call.args[0] if call.args else None
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                result.unknown.append(f"{where}: {service}.{method} with a non-literal name")
                continue
            if method == "get_paginator":
                op = OPERATIONS[service].get(arg.value)
            else:
                try:
                    op = _waiter_operation(service, arg.value)
                except KeyError:
                    op = None
            if op is None:
                result.unknown.append(f"{where}: {service}.{method}({arg.value!r}) is unknown")
            else:
                result.add(f"{service}:{op}", where)
            continue
        if method in NON_API_METHODS:
            continue
        op = OPERATIONS[service].get(method) or (
            SIGNED_OPERATIONS.get(method) if service == "ebs" else None
        )
        if op is None:
            result.unknown.append(f"{where}: {service}.{method} is not a {service} operation")
        else:
            result.add(f"{service}:{op}", where)


def scan_tree() -> ScanResult:
    result = ScanResult()
    for entry in SCANNED:
        path = ROOT / entry
        files = [path] if path.is_file() else sorted(path.rglob("*.py")) if path.is_dir() else []
        for file in files:
            scan_source(file.read_text(encoding="utf-8"), str(file.relative_to(ROOT)), result)
    return result


def load_policy() -> dict[str, Any]:
    return json.loads(POLICY_PATH.read_text(encoding="utf-8"))


def policy_actions(policy: dict[str, Any]) -> set[str]:
    actions: set[str] = set()
    for statement in policy["Statement"]:
        value = statement["Action"]
        actions.update([value] if isinstance(value, str) else value)
    return actions


# -- the scanner itself finds what it should (so the equality test cannot pass vacuously) -----


def test_scanner_recognises_the_documented_conventions() -> None:
    source = """
import boto3
def f(self, session, clients, conn, annotated: "EC2Client", other):
    self.ebs.start_snapshot(VolumeSize=1)
    ebs_client = session.client("ebs")
    ebs_client.put_snapshot_block()
    sts = make_client(conn, "sts")
    sts.get_caller_identity()
    clients.ec2.describe_snapshots()
    annotated.create_tags()
    renamed = session.client(service_name="ec2")
    renamed.get_paginator("describe_snapshots")
    renamed.get_waiter("snapshot_completed")
    self._ec2.delete_snapshot(SnapshotId="x")
    retry(functools.partial(ebs.list_snapshot_blocks, SnapshotId="x"))
    ebs.exceptions.ResourceNotFoundException  # attribute, not an operation
    other.start_snapshot()          # not a client by convention: ignored
    ebs.close()                     # not an API call
"""
    result = ScanResult()
    scan_source(source, "example.py", result)
    assert set(result.calls) == {
        "ebs:StartSnapshot",
        "ebs:PutSnapshotBlock",
        "sts:GetCallerIdentity",
        "ec2:DescribeSnapshots",
        "ec2:CreateTags",
        "ec2:DeleteSnapshot",
        "ebs:ListSnapshotBlocks",
    }
    assert result.unknown == []


def test_scanner_flags_methods_that_are_not_operations() -> None:
    result = ScanResult()
    scan_source("ebs.start_snapshots()\nec2.get_waiter('no_such_waiter')\n", "x.py", result)
    assert len(result.unknown) == 2
    assert "start_snapshots" in result.unknown[0]


# -- the policy ---------------------------------------------------------------------------------


def test_code_uses_only_real_operations() -> None:
    result = scan_tree()
    assert result.unknown == [], "\n".join(result.unknown)


def test_policy_grants_exactly_what_the_code_calls() -> None:
    result = scan_tree()
    called = set(result.calls)
    granted = policy_actions(load_policy())
    missing = sorted(called - granted)
    extra = sorted(granted - called)
    detail = [f"missing from policy: {a} (called at {sorted(result.calls[a])})" for a in missing]
    detail += [f"granted but never called (remove): {a}" for a in extra]
    assert called == granted, "\n".join(detail)


def test_policy_is_well_formed_and_least_privilege() -> None:
    policy = load_policy()
    assert policy["Version"] == "2012-10-17"
    sids = [s["Sid"] for s in policy["Statement"]]
    assert len(sids) == len(set(sids)), "statement ids must be unique"
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"]
        for action in [actions] if isinstance(actions, str) else actions:
            assert "*" not in action, f"wildcard action {action}"
            service = action.split(":", 1)[0]
            assert service in SERVICES, action
        assert "NotAction" not in statement and "NotResource" not in statement


def _statements_with(policy: dict[str, Any], action: str) -> list[dict[str, Any]]:
    out = []
    for s in policy["Statement"]:
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        if action in actions:
            out.append(s)
    return out


def _all_string_constants() -> set[str]:
    constants: set[str] = set()
    for entry in SCANNED:
        path = ROOT / entry
        files = [path] if path.is_file() else sorted(path.rglob("*.py")) if path.is_dir() else []
        for file in files:
            for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    constants.add(node.value)
    return constants


def test_mutating_snapshot_actions_are_scoped() -> None:
    policy = load_policy()
    snapshot_arn = "arn:aws:ec2:*::snapshot/*"
    for action in (
        "ebs:StartSnapshot",
        "ebs:PutSnapshotBlock",
        "ebs:CompleteSnapshot",
        "ec2:CreateTags",
        "ec2:DeleteSnapshot",
    ):
        for statement in _statements_with(policy, action):
            resources = statement["Resource"]
            resources = [resources] if isinstance(resources, str) else resources
            assert "*" not in resources, f"{action} must be limited to snapshot resources"
            if action.startswith("ebs:") or action == "ec2:DeleteSnapshot":
                assert resources == [snapshot_arn], (action, resources)


def test_delete_snapshot_only_for_snapshots_tagged_by_snapship() -> None:
    policy = load_policy()
    statements = _statements_with(policy, "ec2:DeleteSnapshot")
    if not statements:
        # Nothing to scope; the equality test already proves the code does not delete.
        assert "ec2:DeleteSnapshot" not in scan_tree().calls
        return
    constants = _all_string_constants()
    for statement in statements:
        condition = json.dumps(statement.get("Condition", {}))
        keys = re.findall(r"aws:ResourceTag/([^\"]+)", condition)
        assert keys, "ec2:DeleteSnapshot needs an aws:ResourceTag condition"
        for key in keys:
            assert key in constants, (
                f"the policy's tag key {key!r} is not a string in the code: the condition would "
                "never match what snapship tags"
            )
