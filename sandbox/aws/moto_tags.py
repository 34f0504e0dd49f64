"""A resource's own tags read straight from moto's tag store, not by scanning every tag.

moto answers ``resource.get_tags()`` with ``describe_tags(resource-id=ID)``, which runs a regex
over every tag of every resource. DescribeSnapshots with a ``tag:`` filter calls it once per
snapshot per filter, so the local endpoint spent time quadratic in the snapshots it holds: with
60 VMs replicating, a profile of the sandbox showed most of the CPU inside that scan, while EC2
answers such a call at once. The lookup here returns the same rows (EC2 ids hold no wildcard, so
moto's pattern only ever matched the id itself).
"""

from __future__ import annotations

import threading
from typing import Any

from moto.ec2.models.core import TaggedEC2Resource
from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

_installed = threading.Lock()
_patched = False


def _own_tags(self: Any) -> list[dict[str, str]]:
    resource_id = getattr(self, "id", None)
    if not resource_id:
        return []
    tags = self.ec2_backend.tags.get(resource_id)  # .get: the defaultdict grows no entry
    if not tags:
        return []
    resource_type = EC2_PREFIX_TO_RESOURCE.get(get_prefix(resource_id), "")
    return [
        {"resource_id": resource_id, "key": key, "value": value, "resource_type": resource_type}
        for key, value in list(tags.items())
    ]


def install() -> None:
    """Put the lookup into moto (once per process; every tagged EC2 resource uses it)."""
    global _patched
    with _installed:
        if not _patched:
            TaggedEC2Resource.get_tags = _own_tags  # type: ignore[method-assign]
            _patched = True
