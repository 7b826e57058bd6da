"""Files on any filesystem Spark can read, through the JVM's Hadoop ``FileSystem`` (py4j).

Why not pathlib: a Spark build's inputs and Parquet output may live on HDFS or an object store
(``hdfs://``, ``s3a://``, ``abfss://``, ``gs://``), reachable only through the Hadoop client
and the credentials in the user's Spark configuration. Listing, existence checks, renames and
copies of the few small files the driver needs (geography lookups, boundaries) therefore go
through the same ``FileSystem`` objects Spark's own readers use, so whatever ``spark.read``
can read, this module can list — and nothing here needs a local path.

Only used for inputs given as URIs (``scheme://…``); local paths keep pathlib (and its error
messages) as in the DuckDB build.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(text: str | os.PathLike[str]) -> bool:
    """True for ``scheme://…`` (``file:///…``, ``hdfs://nn/…``, ``s3a://bucket/…``)."""
    return isinstance(text, str) and bool(_URI.match(text))


def join(uri: str, *parts: str) -> str:
    """``uri/part/…`` without doubling slashes."""
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


def basename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Entry:
    """One directory entry: its qualified URI, whether it is a directory, its size."""

    uri: str
    is_dir: bool
    size: int

    @property
    def name(self) -> str:
        return basename(self.uri)


class HadoopFS:
    """The Hadoop filesystem(s) of one SparkSession's configuration."""

    def __init__(self, spark: SparkSession) -> None:
        self._jvm: Any = spark._jvm  # py4j: the way to the JVM
        self._conf: Any = spark._jsc.hadoopConfiguration()

    def _fs(self, uri: str) -> tuple[Any, Any]:
        path = self._jvm.org.apache.hadoop.fs.Path(uri)
        return path.getFileSystem(self._conf), path

    def qualified(self, uri: str) -> str:
        """The URI as Spark reports file paths (``file:/x`` for ``file:///x``; no trailing /)."""
        fs, path = self._fs(uri)
        return str(fs.makeQualified(path).toString()).rstrip("/")

    def exists(self, uri: str) -> bool:
        fs, path = self._fs(uri)
        return bool(fs.exists(path))

    def is_dir(self, uri: str) -> bool:
        fs, path = self._fs(uri)
        return bool(fs.exists(path) and fs.getFileStatus(path).isDirectory())

    def entries(self, uri: str) -> list[Entry]:
        """The directory's entries, sorted by name (empty when it does not exist)."""
        fs, path = self._fs(uri)
        if not fs.exists(path):
            return []
        out = [Entry(str(s.getPath().toString()), bool(s.isDirectory()), int(s.getLen()))
               for s in fs.listStatus(path)]
        return sorted(out, key=lambda e: e.uri)

    def files(self, uri: str) -> list[str]:
        """Every file under a directory, recursively, as qualified URIs sorted."""
        fs, path = self._fs(uri)
        if not (fs.exists(path) and fs.getFileStatus(path).isDirectory()):
            return []
        found = fs.listFiles(path, True)
        out: list[str] = []
        while found.hasNext():
            out.append(str(found.next().getPath().toString()))
        return sorted(out)

    def copy_to_local(self, uri: str, local: Path) -> None:
        """Copy one (small) file to a local path, without Hadoop's ``.crc`` side files."""
        fs, path = self._fs(uri)
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.copyToLocalFile(False, path, self._jvm.org.apache.hadoop.fs.Path(local.as_uri()),
                           True)

    def copy_from_local(self, local: Path, uri: str) -> None:
        fs, path = self._fs(uri)
        fs.copyFromLocalFile(False, True, self._jvm.org.apache.hadoop.fs.Path(local.as_uri()),
                             path)

    def mkdirs(self, uri: str) -> None:
        fs, path = self._fs(uri)
        fs.mkdirs(path)

    def rename(self, src: str, dst: str) -> None:
        """Rename (atomic on HDFS and local disks; a copy on most object stores)."""
        fs, path = self._fs(src)
        if not fs.rename(path, self._jvm.org.apache.hadoop.fs.Path(dst)):
            raise OSError(f"cannot rename {src} to {dst}")

    def delete(self, uri: str) -> None:
        fs, path = self._fs(uri)
        fs.delete(path, True)


# --- Temporary trees left by killed runs ------------------------------------------------------

def owner_tag() -> str:
    """``<host>-<pid>``: names a run's temporary tree, so a later run can tell whether its owner
    is gone. The host matters on shared storage (HDFS, object stores): a pid means nothing on
    another machine, so only trees of this host are ever judged."""
    return f"{socket.gethostname()}-{os.getpid()}"


def stale(name: str, prefix: str) -> bool:
    """Whether ``name`` (``<prefix><host>-<pid>`` or ``<prefix><pid>``) is a temporary tree of a
    process of this host that no longer runs (never this process's own)."""
    if not name.startswith(prefix):
        return False
    tag = name[len(prefix):]
    host, _, pid = tag.rpartition("-") if "-" in tag else (socket.gethostname(), "", tag)
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def remove_stale(directory: Path | str, prefixes: Sequence[str], fs: HadoopFS | None = None
                 ) -> list[str]:
    """Delete the entries of ``directory`` (local, or a URI through ``fs``) named
    ``<prefix><host>-<pid>`` whose process is gone: trees a killed build or export left
    behind. A run still going (here or on another host) keeps its tree. Returns the names
    removed."""
    import shutil

    removed: list[str] = []
    if isinstance(directory, str) and is_uri(directory):
        if fs is None:
            raise ValueError("a URI directory needs a HadoopFS")
        for entry in fs.entries(directory):
            if any(stale(entry.name, p) for p in prefixes):
                fs.delete(entry.uri)
                removed.append(entry.name)
        return removed
    local = Path(directory)
    if not local.is_dir():
        return removed
    for path in sorted(local.iterdir()):
        if any(stale(path.name, p) for p in prefixes):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed
