"""EC2 launch rules moto does not keep, added on top of its backend so the launch code meets
EC2's behaviour here:

- RegisterImage with BlockDeviceMappings from snapshots: moto keeps only name and description.
  Here the image records its mappings, root device and boot mode; every snapshot must exist and be
  ``completed`` (EC2: ``InvalidSnapshot.NotFound`` / ``IncorrectState``); the root device must be
  mapped; a name already used by a live image is ``InvalidAMIName.Duplicate``.
- RunInstances from such an image creates the instance's volumes from the image's snapshots
  (request mappings override type/IOPS/encryption per device), so every volume is traceable to the
  snapshot it came from (``Volume.SnapshotId``), and the snapshot still reads through the EBS
  direct APIs. moto instead gives every instance one blank 8 GiB volume.
- DeleteSnapshot of a snapshot an image registered here uses is ``InvalidSnapshot.InUse``
  (moto's own check, fed with the image; one image per snapshot is tracked).
- RunInstances ClientToken: a repeat with the same token returns the first call's instance, and
  the same token with other parameters is ``IdempotentParameterMismatch``. moto launches again.
"""

from __future__ import annotations

import threading
from copy import deepcopy
from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError, InvalidSnapshotIdError
from moto.ec2.models.amis import Ami
from moto.ec2.models.instances import InstanceBackend
from moto.ec2.responses.amis import AmisResponse
from moto.ec2.responses.instances import InstanceResponse

_installed = threading.Lock()
_patched = False
_LOCK = threading.RLock()
MOTO_DEFAULT_TOKEN = "ABCDE"  # what moto's response layer passes when the call has no token


class SnapshotImage(Ami):
    """An AMI registered from snapshots: its block device mappings are the ones given."""

    def __init__(
        self,
        ec2_backend: Any,
        ami_id: str,
        name: str,
        description: str,
        mappings: list[dict[str, Any]],
        root_device_name: str,
        boot_mode: str,
        architecture: str,
    ) -> None:
        super().__init__(
            ec2_backend,
            ami_id,
            name=name,
            description=description,
            architecture=architecture,
            virtualization_type="hvm",
            root_device_type="ebs",
            root_device_name=root_device_name,
            boot_mode=boot_mode,
        )
        # moto's constructor makes a placeholder snapshot; a registered image has none of its own.
        ec2_backend.snapshots.pop(self.ebs_snapshot.id, None)
        self._mappings = mappings

    @property
    def block_device_mappings(self) -> list[dict[str, Any]]:
        return deepcopy(self._mappings)


def _register_image(self: AmisResponse) -> Any:
    mappings = self._parse_block_device_mapping()  # type: ignore[attr-defined]
    if not mappings:
        return _ORIGINAL_REGISTER(self)
    self.error_on_dryrun()
    backend = self.ec2_backend
    name = self._get_param("Name")
    root = self._get_param("RootDeviceName") or "/dev/sda1"
    with _LOCK:
        if any(a.name == name and a.state != "deregistered" for a in backend.amis.values()):
            raise EC2ClientError(
                "InvalidAMIName.Duplicate", f"AMI name {name} is already in use by an AMI"
            )
        if root not in {m["DeviceName"] for m in mappings}:
            raise EC2ClientError(
                "InvalidBlockDeviceMapping",
                f"The device {root} must be mapped (it is the root device)",
            )
        clean = []
        for m in mappings:
            ebs = {k: v for k, v in (m.get("Ebs") or {}).items() if v is not None}
            sid = ebs.get("SnapshotId")
            if sid:
                snap = backend.snapshots.get(sid)
                if snap is None:
                    raise InvalidSnapshotIdError()
                if snap.status != "completed":
                    raise EC2ClientError(
                        "IncorrectState", f"Snapshot {sid} is in invalid state - {snap.status}"
                    )
                ebs.setdefault("VolumeSize", snap.volume.size)
                ebs.setdefault("Encrypted", bool(snap.encrypted))
            clean.append({"DeviceName": m["DeviceName"], "Ebs": ebs})
        from moto.ec2.utils import random_ami_id

        image = SnapshotImage(
            backend,
            random_ami_id(),
            name=name,
            description=self._get_param("Description", ""),
            mappings=clean,
            root_device_name=root,
            boot_mode=self._get_param("BootMode") or "legacy-bios",
            architecture=self._get_param("Architecture") or "x86_64",
        )
        backend.amis[image.id] = image
        for m in clean:
            snap = backend.snapshots.get(m["Ebs"].get("SnapshotId", ""))
            if snap is not None and getattr(snap, "from_ami", None) not in backend.amis:
                # EC2: a snapshot an image uses cannot be deleted (InvalidSnapshot.InUse).
                snap.from_ami = image.id
        tags = self._parse_tag_specification().get("image", {})
        if tags:
            image.add_tags(tags)
    return ActionResult({"ImageId": image.id})


_ORIGINAL_REGISTER = AmisResponse.register_image


def _merge(image: SnapshotImage, requested: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The image's mappings, with the request's per-device overrides (type, IOPS, encryption)."""
    by_device = {m["DeviceName"]: m for m in (requested or [])}
    out = []
    for m in image.block_device_mappings:
        ebs = dict(m["Ebs"])
        override = by_device.pop(m["DeviceName"], None)
        if override:
            ebs.update({k: v for k, v in (override.get("Ebs") or {}).items()
                        if v is not None and k != "SnapshotId"})
        out.append({"DeviceName": m["DeviceName"], "Ebs": ebs})
    out.extend(_require_source(m) for m in by_device.values())
    return out


def _require_source(mapping: dict[str, Any]) -> dict[str, Any]:
    """A device the image does not map needs a size or a snapshot (EC2's MissingParameter)."""
    ebs = mapping.get("Ebs") or {}
    if mapping.get("NoDevice") != "" and not ebs.get("VolumeSize") and not ebs.get("SnapshotId"):
        raise EC2ClientError(
            "MissingParameter", "The request must contain the parameter size or snapshotId"
        )
    return mapping


def _validate_mapping(device_mapping: dict[str, Any]) -> None:
    """RunInstances mappings may override an image's device (type, IOPS, encryption) without
    naming its snapshot or size, as EC2 allows; whether a device needs them is decided once the
    image is known (:func:`_require_source`)."""
    if "Ebs" not in device_mapping and device_mapping.get("NoDevice") != "":
        raise EC2ClientError("MissingParameter", "The request must contain the parameter ebs")


def _run_instances(
    backend: Any, image_id: str, count: int, user_data: Any, security_group_names: list[str],
    **kwargs: Any,
) -> Any:
    token = kwargs.get("client_token")
    with _LOCK:
        if token and token != MOTO_DEFAULT_TOKEN:
            for reservation in list(backend.reservations.values()):
                first = next(iter(reservation.instances), None)
                if first is None or first.client_token != token:
                    continue
                if first.image_id != image_id or first.instance_type != kwargs.get(
                    "instance_type"
                ):
                    raise EC2ClientError(
                        "IdempotentParameterMismatch",
                        "The client token you have provided is associated with a resource "
                        "that is already deleted or has other parameters",
                    )
                return reservation
        image = backend.amis.get(image_id)
        requested = kwargs.get("block_device_mappings")
        if isinstance(image, SnapshotImage):
            mappings = _merge(image, requested)
        else:
            mappings = [_require_source(m) for m in requested or []]
        volume_tags = dict((kwargs.get("tags") or {}).get("volume", {}))
        if mappings:
            # Built here rather than by moto, which drops IOPS and throughput on the way.
            kwargs["block_device_mappings"] = []
        try:
            reservation = _ORIGINAL_RUN(
                backend, image_id, count, user_data, security_group_names, **kwargs
            )
        finally:
            # moto files the reservation before building instances; a failed build leaves an
            # empty one behind, which EC2 never shows.
            for rid in [r.id for r in backend.reservations.values() if not r.instances]:
                backend.reservations.pop(rid, None)
        try:
            for instance in reservation.instances:
                _attach_volumes(backend, instance, mappings, volume_tags)
        except Exception:
            for instance in reservation.instances:
                instance.terminate()
            backend.reservations.pop(reservation.id, None)
            raise
        return reservation


def _attach_volumes(
    backend: Any, instance: Any, mappings: list[dict[str, Any]], tags: dict[str, str]
) -> None:
    for m in mappings:
        if m.get("NoDevice") == "":
            continue
        ebs = m.get("Ebs") or {}
        volume = backend.create_volume(
            size=ebs.get("VolumeSize"),
            zone_name=instance.availability_zone,
            snapshot_id=ebs.get("SnapshotId"),
            encrypted=bool(ebs.get("Encrypted", False)),
            kms_key_id=ebs.get("KmsKeyId"),
            volume_type=ebs.get("VolumeType"),
            iops=ebs.get("Iops"),
            throughput=ebs.get("Throughput"),
        )
        backend.attach_volume(
            volume.id, instance.id, m["DeviceName"], bool(ebs.get("DeleteOnTermination", False))
        )
        if tags:
            volume.add_tags(tags)


def _parse_mappings(self: InstanceResponse) -> list[dict[str, Any]]:
    """RunInstances mappings with only the fields the caller gave: an override of an image's
    device keeps the image's values for the rest (moto fills False/None in)."""
    out = []
    for raw in self._get_param("BlockDeviceMappings", []):
        _validate_mapping(raw)
        mapping: dict[str, Any] = {"DeviceName": raw.get("DeviceName")}
        if "NoDevice" in raw:
            mapping["NoDevice"] = raw["NoDevice"]
        ebs = raw.get("Ebs") or {}
        mapping["Ebs"] = {
            k: (int(v) if k in ("VolumeSize", "Iops", "Throughput") else v)
            for k, v in ebs.items() if v is not None
        }
        for flag in ("DeleteOnTermination", "Encrypted"):
            if isinstance(mapping["Ebs"].get(flag), str):
                mapping["Ebs"][flag] = mapping["Ebs"][flag].lower() == "true"
        out.append(mapping)
    return out


_ORIGINAL_RUN = InstanceBackend.run_instances


def install() -> None:
    """Put the rules into moto (once per process; every region's backend follows them)."""
    global _patched
    with _installed:
        if not _patched:
            AmisResponse.register_image = _register_image  # type: ignore[method-assign]
            InstanceBackend.run_instances = _run_instances  # type: ignore[method-assign,assignment]
            InstanceResponse._parse_block_device_mapping = _parse_mappings  # type: ignore
            _patched = True
