"""What a store's URI and errors mean to a user: the schemes Lance cannot open, said with what
it can, and Lance's object-store errors cut to the line that names the cause."""

from __future__ import annotations

import re

from .errors import InputError

# Schemes Spark and Hadoop users write that Lance has no object store for (measured on pylance
# 14.0.2: "No object store provider found for scheme"), and what Lance reads instead.
_OTHER_SCHEMES = {
    "dbfs": "on Databricks use a Unity Catalog volume path (/Volumes/<catalog>/<schema>/<volume>/...) or the "
            "object store URI under it (s3://, abfss://, gs://)",
    "s3a": "write s3:// (Lance's S3 scheme)", "s3n": "write s3:// (Lance's S3 scheme)",
    "wasb": "write az://<container>/<path> or abfss://<container>@<account>.dfs.core.windows.net/<path>",
    "wasbs": "write az://<container>/<path> or abfss://<container>@<account>.dfs.core.windows.net/<path>",
    "adl": "write abfss://<container>@<account>.dfs.core.windows.net/<path>",
    "hdfs": "Lance does not read HDFS: copy the dataset to an object store or a local path",
}


# where the job's own files (job directory, report, queries) can be: pyarrow's stores, by any
# spelling storage.py maps (s3a is S3 there), and local disk
_FILE_SCHEMES = {"", "file", "s3", "s3a", "s3n", "gs", "gcs", "az", "abfs", "abfss", "adl", "azure"}


def scheme_of(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else uri.split(":", 1)[0].lower() if ":/" in uri else ""


def refuse_unreadable_scheme(uri: str) -> None:
    """A dataset URI Lance cannot open is refused in one line that says what it can open."""
    scheme = scheme_of(uri)
    if scheme in _OTHER_SCHEMES:
        raise InputError(f"Lance cannot open {scheme}: paths ({uri}): {_OTHER_SCHEMES[scheme]}")


def refuse_unwritable_place(flag: str, uri: str) -> None:
    """A place for the job's own files (--job-dir, --report, --query-file) outside every store
    it can reach is refused, rather than written as a local folder named "dbfs:"."""
    scheme = scheme_of(uri)
    if scheme not in _FILE_SCHEMES:
        advice = _OTHER_SCHEMES.get(scheme, "use a local path or an s3://, gs:// or az:// URI")
        raise InputError(f"{flag} {uri}: the job cannot write {scheme}: paths: {advice}")


def describe_storage_error(text: str) -> str:
    """One short line from a Lance/object-store error: the HTTP status and the store's own
    error code and message when there are any (they say "bucket does not exist", "access key
    unknown"), else the start of the first line. Request URLs carry no credentials."""
    status = re.search(r"\b([45]\d\d [A-Z][A-Za-z ]+?)(?=[:<,]|$)", text)
    code = re.search(r"<Code>([^<]+)</Code>", text)
    message = re.search(r"<Message>([^<]+)</Message>", text)
    if code:
        parts = [status.group(1) if status else None, code.group(1), message.group(1) if message else None]
        return ": ".join(p for p in parts if p)
    if "error sending request" in text:
        host = re.search(r"https?://([^/\s]+)", text)
        return f"cannot reach the object store at {host.group(1) if host else 'its endpoint'} (error sending request)"
    for marker, plain in _NO_CREDENTIALS:
        if marker in text:
            return plain
    if re.search(r"Dataset at path .* was not found", text):
        return "no dataset there (no _versions folder)"  # Lance's text names the path without its leading "/"
    first = _RUST_SOURCE.sub("", text.splitlines()[0])  # Lance's own source files mean nothing to a user
    return first[:300]


# What Lance says (as a long debug dump) when a store's credential chain found nothing
_NO_CREDENTIALS = (
    ("Failed to get AWS credentials", "no AWS credentials found: give --storage-option aws_access_key_id=... and "
     "aws_secret_access_key=... (and aws_region=...), or run where an instance profile or the AWS_* variables "
     "provide them"),
    ("MicrosoftAzure error: Error performing token request", "no Azure credentials found: give --storage-option "
     "account_name=... with account_key=... (or sas_token=..., or a service principal's client_id, client_secret "
     "and tenant_id), or run where a managed identity provides them"),
    ("GCS error: Error performing token request", "no Google Cloud credentials found: give --storage-option "
     "service_account=<key file> (or service_account_key=...), or run where the metadata server or "
     "GOOGLE_APPLICATION_CREDENTIALS provides them"),
)


# ", /home/runner/work/lance/lance/rust/lance-table/src/io/commit.rs:653:26" in Lance's messages
_RUST_SOURCE = re.compile(r",?\s*(/[^\s,]*)?/(rust|src)/[^\s,]*\.rs:\d+:\d+")
