"""Small files on local disk or an object store (the job directory, the report).

Lance takes object-store settings as "storage options"; pyarrow's filesystems take the same
settings under other names. `filesystem_for` maps the common ones so users give them once.
"""

from __future__ import annotations

import os
import uuid
from typing import Mapping
from urllib.parse import urlparse

import pyarrow.fs as pafs

_TRUE = {"1", "true", "yes", "on"}


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def filesystem_for(uri: str, storage_options: Mapping[str, str]) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path within it) for a local path or an s3://, gs://, az:// URI."""
    if is_local(uri):
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        return pafs.LocalFileSystem(), os.path.abspath(path)
    parsed = urlparse(uri)
    path = f"{parsed.netloc}{parsed.path}".rstrip("/")
    opts = {k.lower(): v for k, v in storage_options.items()}
    if parsed.scheme in ("s3", "s3a"):
        endpoint = opts.get("aws_endpoint") or opts.get("endpoint") or opts.get("aws_endpoint_url")
        kwargs = dict(
            access_key=opts.get("aws_access_key_id") or opts.get("access_key_id"),
            secret_key=opts.get("aws_secret_access_key") or opts.get("secret_access_key"),
            session_token=opts.get("aws_session_token") or opts.get("session_token"),
            region=opts.get("aws_region") or opts.get("region"),
        )
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
        if opts.get("allow_http", "").lower() in _TRUE and "scheme" not in kwargs:
            kwargs["scheme"] = "http"
        return pafs.S3FileSystem(**{k: v for k, v in kwargs.items() if v}), path
    if parsed.scheme in ("gs", "gcs"):
        return pafs.GcsFileSystem(), path
    if parsed.scheme in ("az", "abfs", "abfss"):
        account = opts.get("azure_storage_account_name") or opts.get("account_name")
        key = opts.get("azure_storage_account_key") or opts.get("account_key")
        return pafs.AzureFileSystem(account_name=account, account_key=key), path
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path


def read_file(path: str, storage_options: Mapping[str, str]) -> bytes:
    """One whole file, by its local path or object-store URI."""
    folder, _, name = path.rstrip("/").rpartition("/")
    return Files(folder or ".", storage_options).read(name)


def write_file(path: str, storage_options: Mapping[str, str], data: bytes) -> None:
    """Write one whole file, by its local path or object-store URI."""
    folder, _, name = path.rstrip("/").rpartition("/")
    Files(folder or ".", storage_options).write(name, data)


def index_dirs(dataset_uri: str, storage_options: Mapping[str, str]) -> Files:
    """The dataset's `_indices` folder: one directory per index segment."""
    return Files(f"{dataset_uri.rstrip('/')}/_indices", storage_options)


class Files:
    """A directory of small files, addressed by relative names."""

    def __init__(self, uri: str, storage_options: Mapping[str, str]):
        self.uri = uri.rstrip("/")
        self.fs, self.root = filesystem_for(self.uri, storage_options)

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}" if name else self.root

    def write(self, name: str, data: bytes) -> None:
        """Write a whole file; readers see the old or the new content, never a part."""
        path = self._path(name)
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        if isinstance(self.fs, pafs.LocalFileSystem):
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, path)  # atomic rename
        else:  # an object store PUT is atomic already
            with self.fs.open_output_stream(path) as f:
                f.write(data)

    def read(self, name: str) -> bytes:
        with self.fs.open_input_stream(self._path(name)) as f:
            return f.read()

    def exists(self, name: str = "") -> bool:
        return self.fs.get_file_info(self._path(name)).type != pafs.FileType.NotFound

    def list(self, folder: str) -> list[str]:
        """Names of the files directly in `folder` (empty when it does not exist)."""
        selector = pafs.FileSelector(self._path(folder), allow_not_found=True)
        return sorted(
            info.base_name for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File and not info.base_name.endswith(".tmp")
        )

    def delete_dir(self, name: str = "") -> None:
        path = self._path(name)
        if self.fs.get_file_info(path).type != pafs.FileType.NotFound:
            self.fs.delete_dir(path)
