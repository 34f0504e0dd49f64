"""The simulator's virtual disks: layered sparse files that the stub libvixDiskLib also reads.

Layout and semantics are those of docs/DESIGN.md ("Sandbox disk format"): every layer is a text
descriptor (`.vmdk`), a sparse data file (`.data`, offset == disk offset) and a map with one byte
per 64 KiB grain (`.map`, 1 = the grain is held by this layer). A snapshot freezes the live layer
and puts a new delta on top; removing a snapshot merges the frozen layer's child into it.

The stub reads frozen layers from another process while the simulator keeps writing, so a frozen
layer is never modified in place, except while its own snapshot is being consolidated. Data is
always written before the map byte that publishes it.

Changed Block Tracking keeps one grain bitmap per (epoch, sequence): writes land in the current
sequence, a snapshot seals it. A query for snapshot S against changeId c is the union of the
sequences after c up to S, so writes made after S are never reported for S.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path

GRAIN_SIZE = 65536
_COPY_CHUNK = 8 * 1024 * 1024
_DS_PATH = re.compile(r"^\[(?P<ds>[^\]]+)\]\s*(?P<rest>.+)$")


class DiskError(Exception):
    """Any failure of the disk store (bad argument, unknown file, wrong state)."""


class CbtFileFault(DiskError):
    """A changeId from another epoch, or CBT off / not active (vSphere's FileFault)."""


class InvalidOffset(DiskError):
    """startOffset >= capacity, or a range outside the disk (vSphere's InvalidArgument)."""


@dataclass(frozen=True)
class ChangedAreas:
    """One page of a changed-area query; the next query starts at start_offset + length."""

    start_offset: int
    length: int
    extents: list[tuple[int, int]]


@dataclass(frozen=True)
class FrozenPoint:
    """What a snapshot records for one disk: its frozen layer and the disk's changeId."""

    file: str
    change_id: str


@dataclass
class _Layer:
    """One layer: open descriptors on its data and map files plus the map held in memory."""

    stem: str
    capacity: int
    parent: str
    grain_map: bytearray
    data_fd: int
    map_fd: int


@dataclass
class _Point:
    """The CBT position a frozen layer was taken at (epoch "" when CBT was off)."""

    epoch: str
    seq: int
    change_id: str


def parse_datastore_path(path: str) -> tuple[str, str, str]:
    """Split "[ds1] vm-1/vm-1.vmdk" into (datastore, folder, file stem)."""
    match = _DS_PATH.match(path.strip())
    if not match:
        raise DiskError(f"not a datastore path: {path!r}")
    rest = match.group("rest").strip()
    folder, _, name = rest.rpartition("/")
    if not name.endswith(".vmdk") or not folder:
        raise DiskError(f"not a disk path: {path!r}")
    return match.group("ds"), folder, name[: -len(".vmdk")]


def _grains(capacity: int) -> int:
    return (capacity + GRAIN_SIZE - 1) // GRAIN_SIZE


def _runs(
    bitmap: bytes | bytearray, start: int = 0, end: int | None = None
) -> list[tuple[int, int]]:
    """Runs of 1-bytes in a 0/1 bitmap[start:end] as (first, count) grain pairs."""
    stop_at = len(bitmap) if end is None else min(end, len(bitmap))
    out: list[tuple[int, int]] = []
    pos = start
    while pos < stop_at:
        first = bitmap.find(b"\x01", pos, stop_at)
        if first < 0:
            break
        stop = bitmap.find(b"\x00", first, stop_at)
        if stop < 0:
            stop = stop_at
        out.append((first, stop - first))
        pos = stop
    return out


def _or_maps(maps: list[bytearray], length: int) -> bytearray:
    """Bytewise OR of 0/1 maps, padded/truncated to length (big-int OR: no per-byte loop)."""
    acc = 0
    for m in maps:
        acc |= int.from_bytes(bytes(m[:length]), "little")
    return bytearray(acc.to_bytes(length, "little")) if length else bytearray()


def _pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _pread_into(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.preadv(fd, [view], offset)
        if n <= 0:
            view[:] = bytes(len(view))  # beyond EOF of a sparse file: zeros
            return
        view = view[n:]
        offset += n


class VirtualDisk:
    """One virtual disk: its chain of layers (base first, live last) and its CBT state."""

    def __init__(
        self,
        store: DiskStore,
        uuid: str,
        capacity: int,
        datastore: str,
        folder: str,
        name: str,
        cbt_enabled: bool,
    ) -> None:
        self._store = store
        self.uuid = uuid
        self.capacity = capacity
        self.datastore = datastore
        self.folder = folder
        self.name = name
        self.cbt_enabled = cbt_enabled
        self._lock = threading.RLock()
        self._layers: list[_Layer] = []
        self._points: dict[str, _Point] = {}
        self._aliases: dict[str, str] = {}
        self._counter = 0
        self._epoch = ""
        self._seq = 0
        self._changes: dict[tuple[str, int], bytearray] = {}
        self._cbt_fd = -1  # file of the current change set (persisted like the maps)
        self._deleted = False

    # ----- paths -------------------------------------------------------------------------

    def _dir(self) -> Path:
        return self._store.datastore_dir(self.datastore) / self.folder

    def _ds_path(self, stem: str) -> str:
        return f"[{self.datastore}] {self.folder}/{stem}.vmdk"

    @property
    def live_file(self) -> str:
        """Datastore path of the writable layer."""
        with self._lock:
            return self._ds_path(self._layers[-1].stem)

    def layer_files(self) -> list[str]:
        """Datastore paths of all layers, base first (for inspection and tests)."""
        with self._lock:
            return [self._ds_path(layer.stem) for layer in self._layers]

    def resolve(self, file: str) -> str:
        """Current datastore path for a layer path, following consolidation merges."""
        with self._lock:
            return self._ds_path(self._layers[self._index(file)].stem)

    def _index(self, file: str) -> int:
        ds, folder, stem = parse_datastore_path(file)
        if ds != self.datastore or folder != self.folder:
            raise DiskError(f"{file!r} is not a layer of disk {self.uuid}")
        seen = 0
        while stem in self._aliases and seen < 1000:
            stem = self._aliases[stem]
            seen += 1
        for i, layer in enumerate(self._layers):
            if layer.stem == stem:
                return i
        raise DiskError(f"{file!r} is not a layer of disk {self.uuid}")

    # ----- layer files -------------------------------------------------------------------

    def _write_descriptor(self, layer: _Layer) -> None:
        parent = f"{layer.parent}.vmdk" if layer.parent else ""
        text = (
            'version="1"\n'
            f'capacity="{layer.capacity}"\n'
            f'grain="{GRAIN_SIZE}"\n'
            f'data="{layer.stem}.data"\n'
            f'map="{layer.stem}.map"\n'
            f'parent="{parent}"\n'
            f'uuid="{self.uuid}"\n'
        )
        path = self._dir() / f"{layer.stem}.vmdk"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    def _new_layer(self, stem: str, parent: str) -> _Layer:
        d = self._dir()
        d.mkdir(parents=True, exist_ok=True)
        for ext in (".vmdk", ".data", ".map"):
            if (d / f"{stem}{ext}").exists():
                raise DiskError(f"file exists: {d / (stem + ext)}")
        data_fd = os.open(d / f"{stem}.data", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        os.ftruncate(data_fd, self.capacity)
        grains = _grains(self.capacity)
        map_fd = os.open(d / f"{stem}.map", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        _pwrite_all(map_fd, bytes(grains), 0)
        layer = _Layer(stem, self.capacity, parent, bytearray(grains), data_fd, map_fd)
        self._write_descriptor(layer)
        return layer

    def _drop_layer_files(self, layer: _Layer) -> None:
        os.close(layer.data_fd)
        os.close(layer.map_fd)
        for ext in (".vmdk", ".data", ".map"):
            try:
                (self._dir() / f"{layer.stem}{ext}").unlink()
            except FileNotFoundError:
                pass

    def _set_map(self, layer: _Layer, first: int, count: int) -> None:
        layer.grain_map[first : first + count] = b"\x01" * count
        _pwrite_all(layer.map_fd, b"\x01" * count, first)

    # ----- reading -----------------------------------------------------------------------

    def _check_range(self, offset: int, length: int, capacity: int) -> None:
        if offset < 0 or length < 0 or offset + length > capacity:
            raise InvalidOffset(
                f"range {offset}+{length} outside disk {self.uuid} of {capacity} bytes"
            )

    def _owner_runs(self, top: int, g0: int, g1: int) -> list[tuple[int, int, int]]:
        """(first grain, count, layer index or -1) runs for grains g0..g1-1 in view `top`."""
        chain = self._layers[: top + 1]
        runs: list[tuple[int, int, int]] = []
        for g in range(g0, g1):
            owner = -1
            for i in range(len(chain) - 1, -1, -1):
                m = chain[i].grain_map
                if g < len(m) and m[g]:
                    owner = i
                    break
            if runs and runs[-1][2] == owner and runs[-1][0] + runs[-1][1] == g:
                first, count, _ = runs[-1]
                runs[-1] = (first, count + 1, owner)
            else:
                runs.append((g, 1, owner))
        return runs

    def _read_view(self, top: int, offset: int, length: int) -> bytearray:
        out = bytearray(length)
        if length == 0:
            return out
        view = memoryview(out)
        g0 = offset // GRAIN_SIZE
        g1 = (offset + length - 1) // GRAIN_SIZE + 1
        for first, count, owner in self._owner_runs(top, g0, g1):
            if owner < 0:
                continue
            a = max(offset, first * GRAIN_SIZE)
            b = min(offset + length, (first + count) * GRAIN_SIZE)
            _pread_into(self._layers[owner].data_fd, view[a - offset : b - offset], a)
        return out

    def read(self, offset: int, length: int, file: str | None = None) -> bytes:
        """The disk's content as seen at a layer (the live layer by default)."""
        with self._lock:
            top = len(self._layers) - 1 if file is None else self._index(file)
            self._check_range(offset, length, self._layers[top].capacity)
            return bytes(self._read_view(top, offset, length))

    # ----- guest writes ------------------------------------------------------------------

    def write(self, offset: int, data: bytes) -> None:
        """A guest write: lands in the live layer and is recorded by CBT."""
        with self._lock:
            self._check_range(offset, len(data), self.capacity)
            if not data:
                return
            top = len(self._layers) - 1
            live = self._layers[top]
            end = offset + len(data)
            g0 = offset // GRAIN_SIZE
            g1 = (end - 1) // GRAIN_SIZE + 1
            # copy-on-write of partially covered edge grains this layer does not hold yet
            for g in {g0, g1 - 1}:
                gstart = g * GRAIN_SIZE
                gend = min(gstart + GRAIN_SIZE, self.capacity)
                partial = offset > gstart or end < gend
                if partial and not live.grain_map[g] and top > 0:
                    below = self._read_view(top - 1, gstart, gend - gstart)
                    _pwrite_all(live.data_fd, below, gstart)
            _pwrite_all(live.data_fd, data, offset)
            self._set_map(live, g0, g1 - g0)
            if self.cbt_enabled:
                self._changes[(self._epoch, self._seq)][g0:g1] = b"\x01" * (g1 - g0)
                _pwrite_all(self._cbt_fd, b"\x01" * (g1 - g0), g0)

    def zero(self, offset: int, length: int) -> None:
        """Explicit zeros written by the guest (a change like any other write)."""
        with self._lock:
            self._check_range(offset, length, self.capacity)
            pos = offset
            end = offset + length
            while pos < end:
                n = min(_COPY_CHUNK, end - pos)
                self.write(pos, bytes(n))
                pos += n

    # ----- snapshots ---------------------------------------------------------------------

    def snapshot(self) -> FrozenPoint:
        """Freeze the live layer and put a new delta on top of it."""
        with self._lock:
            live = self._layers[-1]
            change_id = f"{self._epoch}/{self._seq}" if self.cbt_enabled else ""
            self._points[live.stem] = _Point(
                self._epoch if self.cbt_enabled else "", self._seq, change_id
            )
            if self.cbt_enabled:
                self._seq += 1
                self._new_change_set()
            self._counter += 1
            stem = f"{self.name}-{self._counter:06d}"
            while (self._dir() / f"{stem}.vmdk").exists():
                self._counter += 1
                stem = f"{self.name}-{self._counter:06d}"
            self._layers.append(self._new_layer(stem, live.stem))
            self._save()
            return FrozenPoint(self._ds_path(live.stem), change_id)

    def remove_snapshot(self, file: str) -> None:
        """Consolidate: merge the frozen layer's child into it; the child's files go away."""
        with self._lock:
            idx = self._index(file)
            parent = self._layers[idx]
            if parent.stem not in self._points or idx + 1 >= len(self._layers):
                raise DiskError(f"{file!r} is not a snapshot layer of disk {self.uuid}")
            child = self._layers[idx + 1]
            buf = bytearray(_COPY_CHUNK)
            view = memoryview(buf)
            for first, count in _runs(child.grain_map):
                a = first * GRAIN_SIZE
                b = min((first + count) * GRAIN_SIZE, child.capacity)
                pos = a
                while pos < b:
                    n = min(_COPY_CHUNK, b - pos)
                    _pread_into(child.data_fd, view[:n], pos)
                    _pwrite_all(parent.data_fd, view[:n], pos)
                    pos += n
                self._set_map(parent, first, count)
            child_is_live = idx + 1 == len(self._layers) - 1
            del self._points[parent.stem]
            if not child_is_live:
                self._points[parent.stem] = self._points.pop(child.stem)
            for k, v in list(self._aliases.items()):
                if v == child.stem:
                    self._aliases[k] = parent.stem
            self._aliases[child.stem] = parent.stem
            del self._layers[idx + 1]
            if idx + 1 < len(self._layers):
                grandchild = self._layers[idx + 1]
                grandchild.parent = parent.stem
                self._write_descriptor(grandchild)
            self._drop_layer_files(child)
            self._gc_changes()
            self._save()

    def frozen_points(self) -> dict[str, FrozenPoint]:
        """Current frozen layers with the changeId each was taken at."""
        with self._lock:
            return {
                self._ds_path(stem): FrozenPoint(self._ds_path(stem), p.change_id)
                for stem, p in self._points.items()
            }

    # ----- CBT ---------------------------------------------------------------------------

    def _cbt_dir(self) -> Path:
        return self._store.state_dir / "disks" / f"{self.uuid}.cbt"

    def _new_change_set(self) -> None:
        """An empty change set for (epoch, seq), with its file open for writes."""
        grains = _grains(self.capacity)
        self._changes[(self._epoch, self._seq)] = bytearray(grains)
        if self._cbt_fd >= 0:
            os.close(self._cbt_fd)
        self._cbt_dir().mkdir(parents=True, exist_ok=True)
        path = self._cbt_dir() / f"{self._epoch}-{self._seq}"
        self._cbt_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        _pwrite_all(self._cbt_fd, bytes(grains), 0)

    def _gc_changes(self) -> None:
        keep = {self._epoch} | {p.epoch for p in self._points.values()}
        for key in [k for k in self._changes if k[0] not in keep]:
            del self._changes[key]
            try:
                (self._cbt_dir() / f"{key[0]}-{key[1]}").unlink()
            except FileNotFoundError:
                pass

    def _meta(self) -> dict[str, object]:
        return {
            "uuid": self.uuid,
            "capacity": self.capacity,
            "datastore": self.datastore,
            "folder": self.folder,
            "name": self.name,
            "cbt_enabled": self.cbt_enabled,
            "layers": [layer.stem for layer in self._layers],
            "points": {k: [p.epoch, p.seq, p.change_id] for k, p in self._points.items()},
            "aliases": self._aliases,
            "counter": self._counter,
            "epoch": self._epoch,
            "seq": self._seq,
            "change_sets": [[e, q] for e, q in self._changes],
        }

    def _save(self) -> None:
        """Persist what is not in the layer files, so a new DiskStore can reopen the disk."""
        path = self._store.state_dir / "disks" / f"{self.uuid}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self._meta(), indent=1))
        os.replace(tmp, path)

    def set_cbt(self, enabled: bool) -> None:
        """Turn CBT on or off; turning it on (after it was off) starts a new epoch."""
        with self._lock:
            if enabled and not self.cbt_enabled:
                self.cbt_enabled = True
                self._start_epoch()
            elif not enabled:
                self.cbt_enabled = False
            self._save()

    def _start_epoch(self) -> None:
        self._epoch = str(uuidlib.uuid4())
        self._seq = 0
        self._new_change_set()
        self._gc_changes()

    def new_epoch(self) -> None:
        """A hard power-off or CBT corruption: earlier changeIds become invalid."""
        with self._lock:
            self._start_epoch()
            self._save()

    def query_changed_areas(
        self, file: str, start_offset: int, change_id: str, max_extents: int = 2000
    ) -> ChangedAreas:
        """Grains changed after change_id up to the snapshot at `file` ("*": allocated)."""
        with self._lock:
            idx = self._index(file)
            layer = self._layers[idx]
            point = self._points.get(layer.stem)
            if point is None:
                raise DiskError(f"{file!r} is not a snapshot layer of disk {self.uuid}")
            capacity = layer.capacity
            if start_offset < 0 or start_offset >= capacity:
                raise InvalidOffset(f"startOffset {start_offset} outside 0..{capacity - 1}")
            if max_extents < 1:
                raise InvalidOffset("max_extents must be at least 1")
            if not self.cbt_enabled or not point.change_id:
                raise CbtFileFault(f"change tracking is not active for disk {self.uuid}")
            grains = _grains(capacity)
            if change_id == "*":
                bitmap = _or_maps([m.grain_map for m in self._layers[: idx + 1]], grains)
            else:
                epoch, _, seq_text = change_id.rpartition("/")
                if epoch != point.epoch or not seq_text.isdigit():
                    raise CbtFileFault(f"changeId {change_id!r} is not valid for this disk")
                seq = int(seq_text)
                if seq > point.seq:
                    raise CbtFileFault(f"changeId {change_id!r} is newer than the snapshot")
                maps = [
                    self._changes[(epoch, s)]
                    for s in range(seq + 1, point.seq + 1)
                    if (epoch, s) in self._changes
                ]
                bitmap = _or_maps(maps, grains)
            extents: list[tuple[int, int]] = []
            more = False
            for first, count in _runs(bitmap, start_offset // GRAIN_SIZE):
                if len(extents) >= max_extents:
                    more = True
                    break
                a = max(first * GRAIN_SIZE, start_offset)
                b = min((first + count) * GRAIN_SIZE, capacity)
                extents.append((a, b - a))
            if more:
                last_a, last_len = extents[-1]
                length = last_a + last_len - start_offset
            else:
                length = capacity - start_offset
            return ChangedAreas(start_offset, length, extents)

    # ----- lifecycle ---------------------------------------------------------------------

    def extend(self, new_capacity: int) -> None:
        """Grow the disk (no snapshots may exist, as in vSphere); starts a new CBT epoch."""
        with self._lock:
            if new_capacity % 1024 or new_capacity < self.capacity:
                raise DiskError(f"new capacity {new_capacity} must be whole KiB and not smaller")
            if len(self._layers) != 1:
                raise DiskError("cannot extend a disk that has snapshots")
            live = self._layers[0]
            self.capacity = new_capacity
            live.capacity = new_capacity
            os.ftruncate(live.data_fd, new_capacity)
            old = len(live.grain_map)
            grains = _grains(new_capacity)
            live.grain_map.extend(bytes(grains - old))
            _pwrite_all(live.map_fd, bytes(grains - old), old)
            self._write_descriptor(live)
            if self.cbt_enabled:
                self._start_epoch()
            self._save()

    def relocate(self, datastore: str, folder: str) -> dict[str, str]:
        """Storage vMotion: move every layer's files; returns old -> new datastore paths."""
        with self._lock:
            old_dir = self._dir()
            new_dir = self._store.datastore_dir(datastore) / folder
            new_dir.mkdir(parents=True, exist_ok=True)
            moved: dict[str, str] = {}
            stems = [layer.stem for layer in self._layers]
            for stem in stems:
                for ext in (".vmdk", ".data", ".map"):
                    if (new_dir / f"{stem}{ext}").exists():
                        raise DiskError(f"file exists at destination: {new_dir / (stem + ext)}")
            for stem in stems:
                old_path = self._ds_path(stem)
                for ext in (".vmdk", ".data", ".map"):
                    os.replace(old_dir / f"{stem}{ext}", new_dir / f"{stem}{ext}")
                moved[old_path] = f"[{datastore}] {folder}/{stem}.vmdk"
            self.datastore = datastore
            self.folder = folder
            try:
                old_dir.rmdir()
            except OSError:
                pass
            self._save()
            return moved

    def export_point_in_time(self, file: str, dest: Path) -> None:
        """Write a sparse raw image of the disk as seen at that layer (for verification)."""
        with self._lock:
            idx = self._index(file)
            capacity = self._layers[idx].capacity
            bitmap = _or_maps([m.grain_map for m in self._layers[: idx + 1]], _grains(capacity))
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.ftruncate(fd, capacity)
                for first, count in _runs(bitmap):
                    a = first * GRAIN_SIZE
                    b = min((first + count) * GRAIN_SIZE, capacity)
                    pos = a
                    while pos < b:
                        n = min(_COPY_CHUNK, b - pos)
                        _pwrite_all(fd, self._read_view(idx, pos, n), pos)
                        pos += n
            finally:
                os.close(fd)

    def _close(self, remove: bool) -> None:
        with self._lock:
            for layer in self._layers:
                if remove:
                    self._drop_layer_files(layer)
                else:
                    os.close(layer.data_fd)
                    os.close(layer.map_fd)
            self._layers = []
            self._deleted = True
            if self._cbt_fd >= 0:
                os.close(self._cbt_fd)
                self._cbt_fd = -1
            if remove:
                try:
                    self._dir().rmdir()
                except OSError:
                    pass
                shutil.rmtree(self._cbt_dir(), ignore_errors=True)
                try:
                    (self._store.state_dir / "disks" / f"{self.uuid}.json").unlink()
                except FileNotFoundError:
                    pass

    @classmethod
    def _reopen(cls, store: DiskStore, meta: dict) -> VirtualDisk:
        """Rebuild a disk from its saved metadata and its layer files."""
        disk = cls(store, meta["uuid"], int(meta["capacity"]), meta["datastore"],
                   meta["folder"], meta["name"], bool(meta["cbt_enabled"]))
        d = disk._dir()
        parent = ""
        for stem in meta["layers"]:
            desc = dict(
                line.split("=", 1) for line in (d / f"{stem}.vmdk").read_text().splitlines()
                if "=" in line
            )
            capacity = int(desc["capacity"].strip('"'))
            data_fd = os.open(d / f"{stem}.data", os.O_RDWR)
            map_fd = os.open(d / f"{stem}.map", os.O_RDWR)
            grain_map = bytearray((d / f"{stem}.map").read_bytes())
            disk._layers.append(_Layer(stem, capacity, parent, grain_map, data_fd, map_fd))
            parent = stem
        disk._points = {k: _Point(v[0], int(v[1]), v[2]) for k, v in meta["points"].items()}
        disk._aliases = dict(meta["aliases"])
        disk._counter = int(meta["counter"])
        disk._epoch = meta["epoch"]
        disk._seq = int(meta["seq"])
        for epoch, seq in meta["change_sets"]:
            path = disk._cbt_dir() / f"{epoch}-{seq}"
            disk._changes[(epoch, int(seq))] = bytearray(path.read_bytes())
        if disk._epoch:
            path = disk._cbt_dir() / f"{disk._epoch}-{disk._seq}"
            disk._cbt_fd = os.open(path, os.O_RDWR)
        return disk


@dataclass
class DiskStore:
    """All virtual disks of one simulator; files live under state_dir/datastores."""

    state_dir: Path
    _disks: dict[str, VirtualDisk] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        (self.state_dir / "datastores").mkdir(parents=True, exist_ok=True)
        # Reopen the disks an earlier DiskStore left in this state directory.
        for meta_file in sorted((self.state_dir / "disks").glob("*.json")):
            disk = VirtualDisk._reopen(self, json.loads(meta_file.read_text()))
            self._disks[disk.uuid] = disk

    def datastore_dir(self, datastore: str) -> Path:
        """Directory backing a datastore name (created on demand)."""
        if not datastore or "/" in datastore or datastore in (".", ".."):
            raise DiskError(f"bad datastore name {datastore!r}")
        return self.state_dir / "datastores" / datastore

    def create_disk(
        self,
        datastore: str,
        folder: str,
        name: str,
        capacity: int,
        uuid: str | None = None,
        cbt_enabled: bool = False,
    ) -> VirtualDisk:
        """A new, empty (all zero, nothing allocated) disk of `capacity` bytes (whole KiB).

        Idempotent for an identical disk (same uuid, location, name and capacity) that this
        store reopened from its state directory: a restarted simulator re-declaring its disks
        gets them back with their data, snapshots and CBT state.
        """
        if capacity <= 0 or capacity % 1024:
            raise DiskError(f"capacity {capacity} must be a positive whole number of KiB")
        if name.endswith(".vmdk"):
            name = name[: -len(".vmdk")]
        if not name or "/" in name or not folder or ".." in folder.split("/"):
            raise DiskError(f"bad disk location {folder!r}/{name!r}")
        disk_uuid = uuid or str(uuidlib.uuid4())
        with self._lock:
            existing = self._disks.get(disk_uuid)
            if existing is not None:
                same = (existing.datastore, existing.folder, existing.name, existing.capacity)
                if uuid is not None and same == (datastore, folder, name, capacity):
                    return existing
                raise DiskError(f"disk {disk_uuid} exists")
            disk = VirtualDisk(self, disk_uuid, capacity, datastore, folder, name, cbt_enabled)
            with disk._lock:
                disk._layers.append(disk._new_layer(name, ""))
                if cbt_enabled:
                    disk._start_epoch()
                disk._save()
            self._disks[disk_uuid] = disk
            return disk

    def disk(self, uuid: str) -> VirtualDisk:
        """The disk with that backing UUID."""
        with self._lock:
            try:
                return self._disks[uuid]
            except KeyError:
                raise DiskError(f"no disk {uuid}") from None

    def disks(self) -> list[VirtualDisk]:
        """All disks (for inspection)."""
        with self._lock:
            return list(self._disks.values())

    def delete_disk(self, uuid: str) -> None:
        """Remove a disk and all its layer files."""
        with self._lock:
            disk = self._disks.pop(uuid, None)
        if disk is None:
            raise DiskError(f"no disk {uuid}")
        disk._close(remove=True)

    def close(self) -> None:
        """Close every file descriptor (files stay on disk)."""
        with self._lock:
            disks = list(self._disks.values())
            self._disks.clear()
        for disk in disks:
            disk._close(remove=False)
