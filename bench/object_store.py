"""Cleanup on an object store: requests and seconds to remove the job's segment directories.

A local S3 server (moto, on 127.0.0.1) holds `--dirs` segment directories of 3 small files
each under a dataset's `_indices`, and one attempt marker per directory in a job directory.
The job's cleanup (`cleanup.remove_own_leftovers`, then `JobState.discard`) removes them, once with one
delete at a time and once with the job's thread pool. Requests are counted from the server's
access log. Prints a markdown section and appends it to docs/benchmarks.md.

    .venv/bin/python bench/object_store.py               # 300 directories
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import DEFAULT_MARKDOWN, append_section, environment_lines, load_average, markdown_table


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dirs", type=int, default=300)
    p.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN)
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def requests_in(log: Path) -> int:
    return sum(1 for line in log.read_text(errors="replace").splitlines() if '" 20' in line or '" 40' in line)


def main(argv=None) -> int:
    args = parse_args(argv)
    started_load = load_average()
    import boto3
    import lance
    import pyarrow as pa

    from spark_lance_index import storage
    from spark_lance_index.cleanup import remove_own_leftovers
    from spark_lance_index.state import JobState

    tmp = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    port = free_port()
    log = tmp / "moto.log"
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1",
                               "-p", str(port)], stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    options = {"aws_endpoint": endpoint, "allow_http": "true", "aws_access_key_id": "k",
               "aws_secret_access_key": "s", "aws_region": "us-east-1"}
    rows = []
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="k", aws_secret_access_key="s",
                          region_name="us-east-1")
        s3.create_bucket(Bucket="bench")
        for threads in (1, storage.DELETE_THREADS):
            dataset = storage.locate(f"s3://bench/d{threads}.lance")
            # a real dataset: cleanup reads its versions (a directory a version uses is never deleted)
            lance.write_dataset(pa.table({"x": [1]}), str(dataset), storage_options=options)
            state = JobState(storage.locate(f"s3://bench/d{threads}.lance.index-jobs"), "job", options)
            written = [str(uuid.uuid4()) for _ in range(args.dirs)]
            for u in written:
                for name in ("index.idx", "auxiliary.idx", "extra"):
                    s3.put_object(Bucket="bench", Key=f"d{threads}.lance/_indices/{u}/{name}", Body=b"x")
                state.mark_attempt(u, 1)
            storage.DELETE_THREADS = threads
            before = requests_in(log)
            t = time.perf_counter()
            removed = remove_own_leftovers(str(dataset), dataset, options, state)
            state.discard()
            seconds = time.perf_counter() - t
            count = requests_in(log) - before
            left = s3.list_objects_v2(Bucket="bench", Prefix=f"d{threads}.lance").get("KeyCount", 0)
            rows.append([str(threads), str(len(removed)), f"{seconds:.2f}", str(count), f"{count / args.dirs:.1f}",
                         str(left)])
            print(rows[-1], flush=True)
    finally:
        server.terminate()
    blocks = ["\n".join(environment_lines(started_load) + [
        f"- moto_server on 127.0.0.1 (every request a local round trip: a real store adds 10-50 ms each); "
        f"{args.dirs} segment directories of 3 objects, {args.dirs} attempt markers"]),
        markdown_table(["delete threads", "directories removed", "cleanup s", "requests", "requests per directory",
                        "objects left"], rows)]
    print(append_section(args.markdown, "object store: cleanup requests and time", blocks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
