"""Local folders and fsspec URLs as one kind of place to read and write (docs/data.md, "Preparing ERA5 on a cluster").

`Location(url)` is a path on a file system: a local path (absolute once resolved, so that
workers on other nodes of a shared file system find it) or an fsspec URL (``gs://``,
``s3://``, ``memory://``, ...). It writes whole objects atomically where the file system
allows (local: temporary name, then rename; object stores: a single PUT is atomic), reads,
lists and removes, and gives a zarr store for the same place. A URL whose fsspec
filesystem is not installed fails with the package to install.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import fsspec

from aeris.atomic import temporary_beside
from aeris.data.store import DataError, check_protocol, is_remote

__all__ = ["Location"]


class Location:
    """A file or folder, local or behind fsspec; picklable (the filesystem is re-made on demand)."""

    def __init__(self, url: str | os.PathLike):
        url = str(url)
        if is_remote(url):
            check_protocol(url)
            self.url = url.rstrip("/")
        else:
            self.url = str(Path(url.removeprefix("file://")).expanduser().resolve())
        self._fs = None

    def __getstate__(self):
        return {"url": self.url, "_fs": None}

    def __repr__(self) -> str:
        return f"Location({self.url!r})"

    def __str__(self) -> str:
        return self.url

    def __eq__(self, other) -> bool:
        return isinstance(other, Location) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    @property
    def remote(self) -> bool:
        return is_remote(self.url)

    @property
    def fs(self):
        if self._fs is None:
            if self.remote:
                self._fs, _ = fsspec.core.url_to_fs(self.url)
            else:
                self._fs = fsspec.filesystem("file", auto_mkdir=True)
        return self._fs

    @property
    def path(self) -> str:
        """The path inside the filesystem (no protocol)."""
        return fsspec.core.url_to_fs(self.url)[1] if self.remote else self.url

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    def _join(self, url: str) -> Location:
        out = Location.__new__(Location)
        out.url, out._fs = url, self._fs
        return out

    def child(self, rel: str) -> Location:
        """The entry `rel` ('a/b') under this folder."""
        return self._join(f"{self.url}/{rel.strip('/')}")

    def sibling(self, name: str) -> Location:
        """Another entry of the same folder."""
        return self._join(f"{self.url.rsplit('/', 1)[0]}/{name}")

    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.path)

    def read_json(self):
        return json.loads(self.read_bytes())

    def write_bytes(self, data: bytes | list, atomic: bool = True) -> None:
        """Write the object whole: `data` is bytes or a list of buffers written one after the
        other (no concatenated copy). A local file goes through a temporary name and a rename
        unless not `atomic` (then it is written in place: for data whose completion is marked
        elsewhere, so that an interrupted write leaves no temporary file behind)."""
        parts = data if isinstance(data, list) else [data]
        if self.remote:
            with self.fs.open(self.path, "wb") as f:
                for p in parts:
                    f.write(p)
            return
        if not atomic:
            Path(self.url).parent.mkdir(parents=True, exist_ok=True)
            with open(self.url, "wb") as f:
                for p in parts:
                    f.write(p)
            return
        target = Path(self.url)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temporary_beside(target)
        try:
            with os.fdopen(fd, "wb") as f:
                for p in parts:
                    f.write(p)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def write_json(self, obj) -> None:
        self.write_bytes(json.dumps(obj, indent=1, sort_keys=True, default=str).encode())

    def listdir(self) -> list[str]:
        """Names of the entries of this folder ([] when it does not exist)."""
        try:
            entries = self.fs.ls(self.path, detail=False)
        except FileNotFoundError:
            return []
        return sorted(str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def remove(self) -> None:
        """Remove this file or folder and everything under it (nothing if absent)."""
        if self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=True)

    def move_to(self, other: Location) -> None:
        """Rename (local: atomic `os.replace`; object stores: copy, then delete)."""
        if not self.remote and not other.remote:
            Path(other.url).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.url, other.url)
            return
        if self.remote != other.remote or type(self.fs) is not type(other.fs):
            raise DataError(f"cannot move {self.url} to {other.url}: another file system")
        self.fs.mv(self.path, other.path, recursive=True)

    def zarr_store(self, read_only: bool = False):
        """A zarr v3 store for this folder."""
        from zarr.storage import FsspecStore, LocalStore
        if self.remote:
            return FsspecStore.from_url(self.url, read_only=read_only)
        return LocalStore(self.url, read_only=read_only)
