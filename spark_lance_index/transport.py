"""The few things the job asks of a Spark cluster, implemented once per transport.

Phases hand plain functions to four primitives and never ask which transport runs them:

- `map(items, fn, shared)`: fn(item, shared) for each item, one Spark task each, results in item order;
- `map_reduce(items, fn, combine, shared)`: the same, results combined pairwise on the way back;
- `cache(items, fn, shared)`: the values fn yields for each item kept on the executors (a
  training sample, in records of a few MiB), for
- `map_reduce_cached(cached, fn, combine, shared)`: one round over what is cached, folded within
  each task before the results travel; `derive` caches a function of it, and `release`.

Classic Spark (spark-submit, clusters, Databricks single-user) uses RDDs: `shared` is a
broadcast, progress comes from accumulators, reduction is a treeReduce on the executors.
Spark Connect (Databricks serverless and standard access mode) has no RDD API: one partition
per item through `mapInArrow`, results pickled in a binary column and combined on arrival, a
cache is a persisted DataFrame; a Connect plan travels in one message (128 MiB by default), so a
large `shared` value (centroids) is written to the job directory and read there once per Python
worker instead of riding in the closure. Either way cached values live on the executors' local
disks (DISK_ONLY): a round re-reads them from the page cache, and no heap has to hold a sample.

Items report their size for the progress bar as `num_rows` (0 when they have none).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from .interrupts import cancelled_jobs_raise_interrupt
from .progress import DEFAULT_INTERVAL, Progress, Ticker
from .storage import Files

log = logging.getLogger(__name__)

# Through Connect, a shared value larger than this (pickled) goes to the job directory.
INLINE_SHARED_BYTES = 4 * 1024 * 1024
SHARED_FOLDER = "shared"


def task_attempt() -> int:
    """Spark's attempt number of the running task (0 outside Spark): tells a retry apart."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return ctx.attemptNumber() if ctx is not None else 0


def _rows(item: Any) -> int:
    return getattr(item, "num_rows", 0)


@dataclass
class Cached:
    """Values kept on the executors between rounds: the records each item yielded."""

    handle: Any  # an RDD (classic) or a persisted DataFrame (Connect)
    shared: Any = None  # Connect: what the cached values were made with, kept until release (a recompute needs it)


class Transport:
    """What the phases use; `transport_for(spark)` picks the implementation."""

    connect = False  # Spark Connect: no RDDs, and on serverless no DataFrame cache

    def __init__(self, spark: Any, scratch: Optional[Files] = None,
                 progress_interval: float = DEFAULT_INTERVAL) -> None:
        self.spark, self.scratch, self.progress_interval = spark, scratch, progress_interval

    def map(self, items: Sequence, fn: Callable, shared: Any = None, *, label: str = "") -> list:
        raise NotImplementedError

    def map_reduce(self, items: Sequence, fn: Callable, combine: Callable, shared: Any = None, *,
                   label: str = "") -> Any:
        raise NotImplementedError

    def cache(self, items: Sequence, fn: Callable, shared: Any = None) -> Cached:
        """fn(item, shared) yields records; all of them stay on the executors."""
        raise NotImplementedError

    def map_reduce_cached(self, cached: Cached, fn: Callable, combine: Callable, shared: Any = None) -> Any:
        raise NotImplementedError

    def derive(self, cached: Cached, fn: Callable, shared: Any = None) -> Cached:
        """fn(record, shared) of each cached record, cached in turn (the source stays cached)."""
        raise NotImplementedError

    def group_map(self, cached: Cached, split: Callable, fn: Callable, shared: Any = None, *,
                  keys: int = 1) -> list:
        """One shuffle: split(record, shared) yields (key, piece) pairs from each cached record,
        keys in range(keys); fn(key, pieces, shared) runs once per key on an executor, over all
        of its pieces. -> fn's results, in no particular order."""
        raise NotImplementedError

    def release(self, cached: Cached) -> None:
        raise NotImplementedError

    def _bar(self, label: str, items: Sequence) -> Optional[Progress]:
        if not label:
            return None
        return Progress(label, len(items), sum(_rows(i) for i in items), interval=self.progress_interval)


def is_connect(spark: Any) -> bool:
    """True for a Spark Connect session (no RDD API, no SparkContext).

    Told from the session's class, never by importing `pyspark.sql.connect`: that import
    calls sys.exit(0) when the Connect client's dependencies are missing and `__main__` has
    no `__file__` (`python -c`, some notebook and job runners), which ended the job as a
    silent success."""
    return any(c.__module__.startswith("pyspark.sql.connect") for c in type(spark).__mro__)


def transport_for(spark: Any, scratch: Optional[Files] = None,
                  progress_interval: float = DEFAULT_INTERVAL) -> Transport:
    """The transport of this session. `scratch` is a folder of the job directory where Connect
    puts shared values too large for its plan (None: they ride in the plan)."""
    kind = ConnectTransport if is_connect(spark) else ClassicTransport
    return kind(spark, scratch, progress_interval)


# --- classic Spark ------------------------------------------------------------------------

class ClassicTransport(Transport):
    def _parallelize(self, items: Sequence) -> Any:
        return self.spark.sparkContext.parallelize(list(items), numSlices=max(1, len(items)))

    def _run(self, items: Sequence, fn: Callable, shared: Any, label: str, action: Callable) -> Any:
        """fn over a broadcast, one task per item, counting finished tasks and rows in
        accumulators for the progress bar."""
        sc = self.spark.sparkContext
        bc, done, rows = sc.broadcast(shared), sc.accumulator(0), sc.accumulator(0)

        def one(item: Any) -> Any:
            out = fn(item, bc.value)
            done.add(1)
            rows.add(_rows(item))
            return out

        bar = self._bar(label, items)
        try:
            with Ticker(bar, lambda: (done.value, rows.value)) if bar else contextlib.nullcontext():
                with cancelled_jobs_raise_interrupt():
                    return action(self._parallelize(items).map(one))
        finally:
            bc.unpersist()

    def map(self, items: Sequence, fn: Callable, shared: Any = None, *, label: str = "") -> list:
        return self._run(items, fn, shared, label, lambda rdd: rdd.collect())

    def map_reduce(self, items: Sequence, fn: Callable, combine: Callable, shared: Any = None, *,
                   label: str = "") -> Any:
        return self._run(items, fn, shared, label, lambda rdd: _tree_reduce(rdd, combine))

    def cache(self, items: Sequence, fn: Callable, shared: Any = None) -> Cached:
        return self._persist(self._parallelize(items).flatMap, fn, shared)

    def _persist(self, method: Callable, fn: Callable, shared: Any) -> Cached:
        from pyspark import StorageLevel

        bc = self.spark.sparkContext.broadcast(shared)
        rdd = method(lambda value: fn(value, bc.value)).persist(StorageLevel.DISK_ONLY)
        try:
            with cancelled_jobs_raise_interrupt():
                rdd.count()  # computed once, here; every round reads the cached records
        except BaseException:
            rdd.unpersist()
            raise
        finally:
            bc.unpersist()  # a recompute fetches it again; destroy() would forbid that
        return Cached(rdd)

    def map_reduce_cached(self, cached: Cached, fn: Callable, combine: Callable, shared: Any = None) -> Any:
        bc = self.spark.sparkContext.broadcast(shared)

        def fold(records: Iterator[Any]) -> list:
            total = None
            for record in records:
                out = fn(record, bc.value)
                total = out if total is None else combine(total, out)
            return [] if total is None else [total]

        try:
            with cancelled_jobs_raise_interrupt():
                return _tree_reduce(cached.handle.mapPartitions(fold), combine)
        finally:
            bc.unpersist()

    def derive(self, cached: Cached, fn: Callable, shared: Any = None) -> Cached:
        return self._persist(cached.handle.map, fn, shared)

    def group_map(self, cached: Cached, split: Callable, fn: Callable, shared: Any = None, *,
                  keys: int = 1) -> list:
        bc = self.spark.sparkContext.broadcast(shared)

        def run(pairs: Iterator[Any]) -> list:
            pieces: dict[Any, list] = {}
            for key, piece in pairs:
                pieces.setdefault(key, []).append(piece)
            return [fn(key, got, bc.value) for key, got in pieces.items()]

        try:
            # a partition per key, grouped in the task: PySpark's groupByKey would merge the
            # pieces through its spilling combiner first (measured: twice the time)
            pairs = cached.handle.flatMap(lambda record: split(record, bc.value))
            with cancelled_jobs_raise_interrupt():
                return pairs.partitionBy(max(1, keys), lambda key: int(key)).mapPartitions(run).collect()
        finally:
            bc.unpersist()

    def release(self, cached: Cached) -> None:
        cached.handle.unpersist()


def _tree_reduce(rdd: Any, combine: Callable) -> Any:
    """Combine on the executors, in as many levels as it takes for the driver to receive at most
    about 16 results (a k-means partial is k x d float64: 25 MiB at 4,096 x 768; every level is
    one more shuffle per round); None when there is nothing to combine."""
    import math

    depth = max(2, math.ceil(math.log(max(2, rdd.getNumPartitions()), 16)))
    try:
        return rdd.treeReduce(combine, depth)
    except ValueError as e:
        if "empty" in str(e).lower():
            return None
        raise


# --- Spark Connect ------------------------------------------------------------------------

RESULT_PIECE_BYTES = 32 * 1024 * 1024  # a result travels in pieces under Connect's 128 MiB message limit


def _pieces(i: int, value: Any) -> Iterator[Any]:
    """Arrow batches (i, piece, pieces, bytes) of one pickled result."""
    import pyarrow as pa

    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    count = max(1, -(-len(data) // RESULT_PIECE_BYTES))
    for n in range(count):
        yield pa.RecordBatch.from_pydict({"i": [i], "piece": [n], "pieces": [count],
                                          "result": [data[n * RESULT_PIECE_BYTES:(n + 1) * RESULT_PIECE_BYTES]]})


_PIECES_SCHEMA = "i long, piece long, pieces long, result binary"


def _assembled(rows: Iterable[Any]) -> Iterator[tuple[int, Any]]:
    """(i, result) from the rows of `_pieces`, as each result's last piece arrives."""
    partial: dict[int, list] = {}
    for row in rows:
        got = partial.setdefault(row["i"], [None] * row["pieces"])
        got[row["piece"]] = row["result"]
        if all(p is not None for p in got):
            del partial[row["i"]]
            yield row["i"], pickle.loads(b"".join(got))


_READ: dict[str, Any] = {}  # executor side: shared values read from the job directory, by digest


@dataclass(frozen=True)
class _Shared:
    """A shared value as a Connect closure carries it: the pickle itself, or where it was written."""

    data: Optional[bytes]
    files: Optional[Files] = None
    name: str = ""
    digest: str = ""

    def value(self) -> Any:
        if self.data is not None:
            return pickle.loads(self.data)
        if self.digest not in _READ:
            assert self.files is not None, "a shared value is either inline or written"
            data = self.files.read(self.name)
            if hashlib.sha256(data).hexdigest() != self.digest:
                raise RuntimeError(f"{self.files}/{self.name} is not the value the driver shared")
            _READ.clear()  # one at a time: a training round replaces the previous centroids
            _READ[self.digest] = pickle.loads(data)
        return _READ[self.digest]


class ConnectTransport(Transport):
    connect = True
    def _share(self, shared: Any) -> _Shared:
        data = pickle.dumps(shared, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) <= INLINE_SHARED_BYTES or self.scratch is None:
            return _Shared(data)
        digest = hashlib.sha256(data).hexdigest()
        name = f"{SHARED_FOLDER}/{digest[:32]}.pkl"
        self.scratch.write(name, data)
        return _Shared(None, self.scratch, name, digest)

    def _unshare(self, handle: _Shared) -> None:
        if handle.files is not None:
            handle.files.delete_file(handle.name)

    def _stream(self, items: Sequence, fn: Callable, handle: _Shared) -> Iterator[tuple[int, Any]]:
        """(index, fn(item, shared)) as results arrive, one partition per item."""
        items = list(items)

        def run_partition(batches: Iterator[Any]) -> Iterator[Any]:
            for batch in batches:
                for i in batch.column(0).to_pylist():
                    yield from _pieces(i, fn(items[i], handle.value()))

        frame = self.spark.range(0, len(items), 1, max(1, len(items))).mapInArrow(run_partition, _PIECES_SCHEMA)
        yield from _assembled(frame.toLocalIterator())

    def _consume(self, items: Sequence, fn: Callable, shared: Any, label: str, fold: Callable) -> None:
        handle = self._share(shared)
        bar = self._bar(label, items)
        done = rows = 0
        try:
            for i, out in self._stream(items, fn, handle):
                fold(i, out)
                done, rows = done + 1, rows + _rows(items[i])
                if bar:
                    bar.update(done, rows)
            if bar:
                bar.update(done, rows, final=True)
        finally:
            self._unshare(handle)

    def map(self, items: Sequence, fn: Callable, shared: Any = None, *, label: str = "") -> list:
        found: dict[int, Any] = {}
        self._consume(items, fn, shared, label, found.__setitem__)
        return [found[i] for i in range(len(items))]

    def map_reduce(self, items: Sequence, fn: Callable, combine: Callable, shared: Any = None, *,
                   label: str = "") -> Any:
        total: list = []

        def fold(_: int, out: Any) -> None:  # the driver holds two results at most
            total[:] = [out if not total else combine(total[0], out)]

        self._consume(items, fn, shared, label, fold)
        return total[0] if total else None

    def cache(self, items: Sequence, fn: Callable, shared: Any = None) -> Cached:
        items = list(items)
        frame = self.spark.range(0, len(items), 1, max(1, len(items)))
        return self._persist(frame, lambda i, shared_value: fn(items[i], shared_value), shared)

    def map_reduce_cached(self, cached: Cached, fn: Callable, combine: Callable, shared: Any = None) -> Any:
        handle = self._share(shared)

        def one_round(batches: Iterator[Any]) -> Iterator[Any]:
            from pyspark import TaskContext

            total = None
            for batch in batches:
                for value in batch.column(0).to_pylist():
                    out = fn(pickle.loads(value), handle.value())
                    total = out if total is None else combine(total, out)
            if total is not None:  # one result per task: folded here, not on the driver
                ctx = TaskContext.get()
                if ctx is None:  # results are keyed by task: never guess one
                    raise RuntimeError("a map-reduce round ran outside a Spark task")
                yield from _pieces(ctx.partitionId(), total)

        total = None
        try:
            for _, out in _assembled(cached.handle.mapInArrow(one_round, _PIECES_SCHEMA).toLocalIterator()):
                total = out if total is None else combine(total, out)
        finally:
            self._unshare(handle)
        return total

    def derive(self, cached: Cached, fn: Callable, shared: Any = None) -> Cached:
        return self._persist(cached.handle, lambda record, shared_value: [fn(pickle.loads(record), shared_value)],
                             shared)

    def _persist(self, frame: Any, records: Callable, shared: Any) -> Cached:
        """Each row of `frame` (column 0) becomes the records `records(row value, shared)`
        yields, kept on the executors' disks; the shared value stays until release."""
        from pyspark import StorageLevel

        handle = self._share(shared)

        def make(batches: Iterator[Any]) -> Iterator[Any]:
            import pyarrow as pa

            for batch in batches:
                for value in batch.column(0).to_pylist():
                    for record in records(value, handle.value()):
                        yield pa.RecordBatch.from_pydict({"value": [pickle.dumps(record)]})

        persisted = frame.mapInArrow(make, "value binary").persist(StorageLevel.DISK_ONLY)
        try:
            persisted.count()  # computed once, here
        except BaseException:
            persisted.unpersist()
            self._unshare(handle)
            raise
        return Cached(persisted, handle)

    def group_map(self, cached: Cached, split: Callable, fn: Callable, shared: Any = None, *,
                  keys: int = 1) -> list:
        handle = self._share(shared)

        def pieces(batches: Iterator[Any]) -> Iterator[Any]:
            import pyarrow as pa

            for batch in batches:
                for value in batch.column(0).to_pylist():
                    for key, piece in split(pickle.loads(value), handle.value()):
                        yield pa.RecordBatch.from_pydict({"key": [int(key)], "value": [pickle.dumps(piece)]})

        def apply(table: Any) -> Any:  # every piece of one key, as one Arrow table
            import pyarrow as pa

            key = table.column("key")[0].as_py()
            out = fn(key, [pickle.loads(v) for v in table.column("value").to_pylist()], handle.value())
            return pa.table({"result": [pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)]})

        try:
            frame = cached.handle.mapInArrow(pieces, "key long, value binary")
            rows = frame.groupBy("key").applyInArrow(apply, "result binary").collect()
        finally:
            self._unshare(handle)
        return [pickle.loads(row["result"]) for row in rows]

    def release(self, cached: Cached) -> None:
        cached.handle.unpersist()
        if cached.shared is not None:
            self._unshare(cached.shared)
