"""A folder on a local path or any pyarrow filesystem URI (hdfs://, s3://), written atomically.

The sample windows and the checkpoint store both live on one of these. A local write goes to
a temporary name, is fsynced, renamed into place, and the folder is fsynced, so a crash leaves
the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


class Root:
    """A root folder on a local path or any pyarrow filesystem URI (hdfs://, s3://)."""

    def __init__(self, uri: str) -> None:
        if "://" in uri:
            self.fs, self.path = pafs.FileSystem.from_uri(uri)
        else:
            self.fs, self.path = pafs.LocalFileSystem(), str(Path(uri).resolve())
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def join(self, *parts: str) -> str:
        return "/".join([self.path.rstrip("/"), *parts])

    def exists(self, path: str) -> bool:
        return bool(self.fs.get_file_info(path).type != pafs.FileType.NotFound)

    def write_atomic(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` in full, then rename into place."""
        folder = path.rsplit("/", 1)[0]
        temporary = f"{folder}/.tmp-{uuid.uuid4().hex}"
        if self.local:
            os.makedirs(folder, exist_ok=True)
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
            _fsync_folder(folder)
            return
        self.fs.create_dir(folder, recursive=True)
        with self.fs.open_output_stream(temporary) as stream:
            stream.write(data)
        self.fs.move(temporary, path)

    def read_table(self, path: str) -> pa.Table:
        with self.fs.open_input_file(path) as handle:
            return pq.read_table(handle)

    def list_files(self, folder: str) -> list[str]:
        selector = pafs.FileSelector(folder, allow_not_found=True)
        return [
            info.path for info in self.fs.get_file_info(selector) if info.type == pafs.FileType.File
        ]

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as stream:
            return bytes(stream.readall())

    def list_dirs(self, folder: str) -> list[str]:
        selector = pafs.FileSelector(folder, allow_not_found=True)
        return sorted(
            info.path
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.Directory
        )

    def mtime(self, path: str) -> float | None:
        """Modification time (epoch seconds) of ``path``, None when it does not exist."""
        info = self.fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound or info.mtime is None:
            return None
        return float(info.mtime.timestamp())

    def delete_dir(self, folder: str) -> None:
        self.fs.delete_dir(folder)


def _fsync_folder(folder: str) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
