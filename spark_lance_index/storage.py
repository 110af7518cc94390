"""Where things are: one mapping from a URI to a place on local disk or an object store.

Lance takes a plain path literally, and parses anything with a scheme (`file://`, `s3://`, ...)
as a URL: `%xx` escapes are decoded and `?query` and `#fragment` are dropped. The job's own
files (job directory, `_indices` cleanup, report, query file) go through `locate`, which applies
the same rules, so the job never looks for or deletes anything anywhere but where Lance put it.
Measured on pylance 14.0.2: `file:///d/a%20b.lance` writes `/d/a b.lance`, `file:///d/f#v2.lance`
writes `/d/f`, and the plain path `/d/c%20d.lance` writes `/d/c%20d.lance`.
"""

from __future__ import annotations

import builtins
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Optional
from urllib.parse import unquote, urlsplit

import pyarrow.fs as pafs

from .errors import InputError

_TRUE = {"1", "true", "yes", "on"}
# URI schemes that reach the same store (what Lance's object_store and pyarrow map them to).
_STORE_ALIASES = {"s3": ("s3", "s3a", "s3n"), "gs": ("gs", "gcs"), "az": ("az", "abfs", "abfss", "adl", "azure")}


@dataclass(frozen=True)
class Location:
    """A decoded place: `scheme` "" is local disk (`path` absolute), else `bucket` and a key
    prefix `path` (no leading slash) on that object store."""

    scheme: str
    bucket: str
    path: str

    def child(self, name: str) -> Location:
        name = name.strip("/")
        if not name:
            return self
        return replace(self, path=f"{self.path.rstrip('/')}/{name}" if self.path else name)

    def sibling(self, suffix: str) -> Location:
        """The same place with `suffix` appended to its last component ("<ds>.index-jobs")."""
        return replace(self, path=self.path.rstrip("/") + suffix)

    def contains(self, other: Location) -> bool:
        """True if `other` is this place or lies inside it, however either is spelled: the
        schemes one store answers to (s3/s3a/s3n, gs/gcs, az/abfs/abfss), and on local disk
        the real path (a symlink into the dataset is inside it)."""
        (store, mine), (theirs_store, theirs) = self._canonical(), other._canonical()
        if store != theirs_store:
            return False
        return theirs == mine or theirs.startswith(mine + "/") or mine == ""

    def lance_uri(self) -> str:
        """This place as Lance's object store names it: it knows s3, gs, az and abfss, not the
        other spellings of those stores (s3a, gcs, abfs, ...)."""
        if not self.scheme or self.scheme in ("s3", "gs", "az", "abfss"):
            return str(self)
        if self.scheme == "abfs":
            return str(replace(self, scheme="abfss"))
        family = next((name for name, aliases in _STORE_ALIASES.items() if self.scheme in aliases), self.scheme)
        return str(replace(self, scheme=family))

    def _canonical(self) -> tuple[tuple[str, str], str]:
        if not self.scheme:
            return ("", ""), os.path.realpath(self.path).rstrip("/")
        family = next((name for name, aliases in _STORE_ALIASES.items() if self.scheme in aliases), self.scheme)
        # abfss://container@account.dfs.core.windows.net/path names the container before the "@"
        return (family, self.bucket.split("@", 1)[0].lower()), self.path.strip("/")

    def __str__(self) -> str:
        if not self.scheme:
            return self.path
        return f"{self.scheme}://{self.bucket}/{self.path}"


def locate(uri: str) -> Location:
    """Where Lance reads and writes `uri` (see the module docstring for the rules)."""
    if "://" not in uri:
        return Location("", "", os.path.abspath(uri))
    parsed = urlsplit(uri)
    path = unquote(parsed.path)
    scheme = parsed.scheme.lower()
    if scheme == "file":
        return Location("", "", os.path.abspath(path or "/"))
    return Location(scheme, unquote(parsed.netloc), path.strip("/"))


def filesystem_for(where: Location, storage_options: Mapping[str, str]) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path within it) for a located place: local disk, s3, gs or az."""
    if not where.scheme:
        return pafs.LocalFileSystem(), where.path
    path = f"{where.bucket}/{where.path}".rstrip("/")
    opts = {k.lower(): v for k, v in storage_options.items()}
    if where.scheme in _STORE_ALIASES["s3"]:
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
        kwargs = {k: v for k, v in kwargs.items() if v}
        try:  # allow_delayed_open: a small file is one PutObject, not a 3-request multipart upload
            return pafs.S3FileSystem(**kwargs, allow_delayed_open=True), path
        except TypeError:  # a pyarrow older than the option
            return pafs.S3FileSystem(**kwargs), path
    if where.scheme in _STORE_ALIASES["gs"]:
        return pafs.GcsFileSystem(), path
    if where.scheme in _STORE_ALIASES["az"]:
        return _azure_filesystem(where, opts)
    raise ValueError(f"unsupported storage scheme {where.scheme!r}")


def _option(opts: Mapping[str, str], *names: str) -> Optional[str]:
    return next((opts[n] for n in names if opts.get(n)), None)


def _azure_filesystem(where: Location, opts: Mapping[str, str]) -> tuple[pafs.FileSystem, str]:
    """pyarrow's Azure filesystem for the storage options Lance's object store takes: the
    account (or the one an abfss:// host names), its key or SAS token, and an endpoint (a
    private endpoint, or Azurite: "http://127.0.0.1:10000/devstoreaccount1", or
    use_emulator=true)."""
    container, _, host = where.bucket.partition("@")
    emulator_flag = _option(opts, "azure_storage_use_emulator", "use_emulator", "azure_use_emulator") or ""
    emulator = emulator_flag.lower() in _TRUE
    # the account an abfss:// host names wins, as in Lance's object store: both must see one account
    account = (host.split(".")[0] if host else None) or _option(opts, "azure_storage_account_name", "account_name") \
        or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME") or ("devstoreaccount1" if emulator else None)
    if not account:
        raise InputError("no Azure storage account: give --storage-option account_name=... (or an abfss:// URI "
                         "that names it)")
    kwargs: dict[str, str] = {}
    key = _option(opts, "azure_storage_account_key", "azure_storage_access_key", "azure_storage_master_key",
                  "account_key", "access_key", "master_key")
    sas = _option(opts, "azure_storage_sas_key", "azure_storage_sas_token", "sas_key", "sas_token")
    if key:
        kwargs["account_key"] = key
    elif sas:
        kwargs["sas_token"] = sas
    for name, option in (("client_id", ("azure_storage_client_id", "azure_client_id", "client_id")),
                         ("client_secret", ("azure_storage_client_secret", "azure_client_secret", "client_secret")),
                         ("tenant_id", ("azure_storage_tenant_id", "azure_tenant_id", "tenant_id"))):
        value = _option(opts, *option)
        if value and not (key or sas):
            kwargs[name] = value
    endpoint = _option(opts, "azure_storage_endpoint", "azure_endpoint", "endpoint")
    if endpoint is None and emulator:
        endpoint = "http://127.0.0.1:10000"
    if endpoint:
        parsed = urlsplit(endpoint)
        kwargs.update(blob_storage_authority=parsed.netloc, blob_storage_scheme=parsed.scheme or "https",
                      dfs_storage_authority=parsed.netloc, dfs_storage_scheme=parsed.scheme or "https")
    return pafs.AzureFileSystem(account_name=account, **kwargs), f"{container}/{where.path}".rstrip("/")


def _folder_and_name(uri: str) -> tuple[Location, str]:
    where = locate(uri)
    folder, _, name = where.path.rstrip("/").rpartition("/")
    return replace(where, path=folder), name


def read_file(uri: str, storage_options: Mapping[str, str]) -> bytes:
    """One whole file, by its local path or object-store URI."""
    folder, name = _folder_and_name(uri)
    return Files(folder, storage_options).read(name)


def write_file(uri: str, storage_options: Mapping[str, str], data: bytes) -> None:
    """Write one whole file, by its local path or object-store URI."""
    folder, name = _folder_and_name(uri)
    Files(folder, storage_options).write(name, data)


def index_dirs(dataset: Location, storage_options: Mapping[str, str]) -> Files:
    """The dataset's `_indices` folder: one directory per index segment."""
    return Files(dataset.child("_indices"), storage_options)


DELETE_THREADS = 16


class Files:
    """A directory of small files, addressed by relative names.

    Reads, writes and listings go through pyarrow. On an object store deletes go through Lance's
    own file session instead: every pyarrow delete writes a zero-byte "folder" marker object for
    the parent (measured on pyarrow 26: `delete_file`, `delete_dir` and `delete_dir_contents`
    all do, whether or not the folder became empty), which would leave `<dataset>/_indices/` and
    job-directory markers behind that one-node Lance never writes."""

    def __init__(self, where: Location, storage_options: Mapping[str, str]):
        self.where = where
        self.storage_options = dict(storage_options)
        self.fs, self.root = filesystem_for(where, storage_options)
        self._session: Any = None  # a LanceFileSession, opened by the first delete

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_session": None}

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def _lance(self) -> Any:
        """Lance's object-store session rooted here (deletes without folder markers)."""
        if self._session is None:
            from lance.file import LanceFileSession

            self._session = LanceFileSession(self.where.lance_uri(), storage_options=self.storage_options or None)
        return self._session

    def __str__(self) -> str:
        return str(self.where)

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}" if name else self.root

    def _make_parent(self, path: str) -> None:
        # Object stores need no folders, and pyarrow's S3 create_dir leaves marker objects
        # behind that the job would then have to delete.
        if isinstance(self.fs, pafs.LocalFileSystem):
            self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)

    def write(self, name: str, data: bytes) -> None:
        """Write a whole file; readers see the old or the new content, never a part."""
        path = self._path(name)
        self._make_parent(path)
        if isinstance(self.fs, pafs.LocalFileSystem):
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, path)  # atomic rename
        else:  # an object store PUT is atomic already
            with self.fs.open_output_stream(path) as f:
                f.write(data)

    def create(self, name: str, data: bytes) -> bool:
        """Write a file only if there is none: False if one exists. Atomic on local disk
        (O_EXCL); on an object store, which offers no such PUT here, a check then a write."""
        path = self._path(name)
        self._make_parent(path)
        if isinstance(self.fs, pafs.LocalFileSystem):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        if self.exists(name):
            return False
        self.write(name, data)
        return True

    def read(self, name: str) -> bytes:
        with self.fs.open_input_stream(self._path(name)) as f:
            return f.read()

    def exists(self, name: str = "") -> bool:
        return self.fs.get_file_info(self._path(name)).type != pafs.FileType.NotFound

    def listing(self, folder: str = "") -> dict[str, float]:
        """{name: modification time in seconds} of the files directly in `folder`, on the
        store's clock (whole seconds on S3)."""
        selector = pafs.FileSelector(self._path(folder), allow_not_found=True)
        return {info.base_name: (info.mtime_ns or 0) / 1e9 for info in self.fs.get_file_info(selector)
                if info.type == pafs.FileType.File and not info.base_name.endswith(".tmp")}

    def list(self, folder: str = "") -> list[str]:
        """Names of the files directly in `folder` (empty when it does not exist)."""
        selector = pafs.FileSelector(self._path(folder), allow_not_found=True)
        return sorted(
            info.base_name for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File and not info.base_name.endswith(".tmp")
        )

    def entries(self, folder: str = "") -> builtins.list[str]:
        """Names of everything directly in `folder`, files and directories."""
        selector = pafs.FileSelector(self._path(folder), allow_not_found=True)
        return sorted(info.base_name for info in self.fs.get_file_info(selector))

    def delete_file(self, name: str) -> None:
        try:
            if self.local:
                self.fs.delete_file(self._path(name))
            else:
                self._lance().delete_file(name)
        except (FileNotFoundError, OSError) as e:
            if self.exists(name):  # anything but "it was not there"
                raise e

    def delete_dir(self, name: str, listed: bool = False) -> None:
        """Delete one named directory and what is in it (a segment directory of ours); `listed`:
        it was just listed, so no request asks whether it is there."""
        if not name:
            raise ValueError("refusing to delete the root of " + str(self))
        path = self._path(name)
        if not self.local:
            for key in self._lance().list(name):
                self.delete_file(key)
            return
        try:
            if listed or self.fs.get_file_info(path).type != pafs.FileType.NotFound:
                self.fs.delete_dir(path)
        except FileNotFoundError:
            pass

    def delete_many(self, names: Iterable[str], dirs: bool = False) -> None:
        """Delete these files (or named directories), DELETE_THREADS at a time: on an object
        store each is several requests (8 per segment directory and marker, measured against a
        local S3 server), each a round trip of 10-50 ms on a real store."""
        import functools
        from concurrent.futures import ThreadPoolExecutor

        names = list(names)
        one = functools.partial(self.delete_dir, listed=True) if dirs else self.delete_file
        if len(names) <= 1 or isinstance(self.fs, pafs.LocalFileSystem):
            for name in names:
                one(name)
            return
        with ThreadPoolExecutor(DELETE_THREADS) as pool:
            list(pool.map(one, names))

    def remove_if_empty(self, name: str = "") -> bool:
        """Remove a folder only when nothing is in it (local disk)."""
        path = self._path(name)
        if isinstance(self.fs, pafs.LocalFileSystem):
            if os.path.isdir(path) and not os.listdir(path):
                os.rmdir(path)
                return True
            return False
        # An object store has no folders to remove: the job writes no marker objects (see the
        # class docstring), and deleting one that pyarrow left earlier would write another.
        return False
