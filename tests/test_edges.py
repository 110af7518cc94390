"""Trust at the edges (issue 20): each test is named for a promise, and each failed on the main
of 2026-12-02 (73463cd) in the way the issue describes."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from spark_lance_index.config import make_config
from spark_lance_index.dataset import IndexInfo, IndexParams, index_conflict

HERE = os.path.dirname(os.path.abspath(__file__))


# --- two indexes on one column: the rule is Lance's planner's ---------------------------------

def test_a_second_scalar_index_is_refused_exactly_when_lances_planner_would_never_use_it():
    """Every ordered pair of scalar and full-text types on one column, measured on real Lance
    datasets: the job refuses the second index exactly when the planner does not serve that
    index's own check filters with it while the first exists."""
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "bench"))
    try:
        import scalar_pairs
    finally:
        sys.path.pop(0)
    measured = scalar_pairs.measure(verbose=False)
    assert len(measured) >= 50
    wrong = []
    for (existing, new, column_type), seen in measured.items():
        first = IndexInfo(name="first", index_type=seen["existing_lance_type"], columns=("c",), is_vector=False,
                          segments=("u",), fragment_ids=frozenset())
        refused = index_conflict("second", "c", False, [first], index_type=new.split("(")[0]) is not None
        if refused == seen["new_serves_own"]:
            wrong.append((existing, new, column_type, "refused" if refused else "allowed", seen))
    assert not wrong, wrong


# --- smaller messages -------------------------------------------------------------------------

def test_a_thin_training_sample_names_the_setting_that_limited_it(caplog):
    from spark_lance_index.train import training_sample_rows

    params = IndexParams("IVF_FLAT", "l2", 1000, 0, 0, 16)
    config = make_config({}, {"uri": "/x", "column": "v"})
    with caplog.at_level("WARNING", logger="spark_lance_index"):
        training_sample_rows(params, config, 512)
    assert "Raise --sample-rate (now 16" in caplog.text
    caplog.clear()
    config = make_config({}, {"uri": "/x", "column": "v", "max_sample_rows": 20_000})
    with caplog.at_level("WARNING", logger="spark_lance_index"):
        training_sample_rows(IndexParams("IVF_FLAT", "l2", 1000, 0, 0, 256), config, 512)
    assert "Raise --max-sample-rows (now 20000)" in caplog.text


# --- 1. a compaction with a deferred remap during `update` ---------------------------------------

def _compact_deferred(uri):
    import lance

    lance.dataset(uri).optimize.compact_files(target_rows_per_fragment=20_000, defer_index_remap=True)


@pytest.mark.parametrize("when", ["before the last check", "between the last check and the commit"])
def test_a_deferred_remap_compaction_during_update_never_gives_a_wrong_verdict(spark, tmp_path, monkeypatch, when):
    """40k rows in 8 fragments, a job-built IVF_RQ, 3,000 rows appended; a compaction with
    `defer_index_remap` lands during the update (it keeps the kept segment's uuid and rewrites its
    fragment list). The update either commits a correct index or refuses with nothing committed;
    either way a plain rerun indexes every row, and no run calls a correct index wrong."""
    import lance
    from test_update import HELD_OUT, Table, build_config, recall_against_exact, update_config

    from spark_lance_index import phases, pipeline
    from spark_lance_index.errors import CommitCheckError, DatasetChangedError

    table = Table(tmp_path / "t", 40_000, rows_per_fragment=5000)
    pipeline.run(build_config(table.uri, index_type="IVF_RQ", rows_per_task=10_000), spark=spark)
    table.append(3000, rows_per_fragment=3000)
    versions_before = lance.dataset(table.uri).version
    done = []
    if when == "before the last check":
        real_merge = phases.merge

        def compact_then_merge(*args, **kwargs):
            _compact_deferred(table.uri)
            return real_merge(*args, **kwargs)

        monkeypatch.setattr(phases, "merge", compact_then_merge)
    else:
        real_check = phases.index_changed

        def check_then_compact(*args, **kwargs):
            verdict = real_check(*args, **kwargs)
            if not done:
                done.append(1)
                _compact_deferred(table.uri)
            return verdict

        monkeypatch.setattr(phases, "index_changed", check_then_compact)
    try:
        first = pipeline.run(update_config(table.uri), spark=spark)
        outcome = "committed"
    except CommitCheckError as e:  # the defect: a correct index called wrong
        pytest.fail(f"a correct index was called wrong: {e}")
    except DatasetChangedError as e:
        outcome = "refused"
        assert "nothing was committed" in str(e)
        stats = lance.dataset(table.uri).stats.index_stats("vector_idx")
        assert stats["num_indexed_rows"] == 40_000  # the update's segment was not committed
    monkeypatch.undo()
    if when == "before the last check":  # the change is seen: refused before the commit
        assert outcome == "refused"
    if outcome == "committed":
        assert first.num_rows == 43_000 and first.unindexed_rows == 0
    rerun = pipeline.run(update_config(table.uri), spark=spark)
    ds = lance.dataset(table.uri)
    stats = ds.stats.index_stats("vector_idx")
    assert (stats["num_indexed_rows"], stats["num_unindexed_rows"]) == (43_000, 0)
    assert ds.version > versions_before and rerun.outcome == "succeeded"
    print(f"{when}: the update {outcome}")
    # held-out queries of the table's own distribution (Gaussian ones read 0.89 to 0.97 from one
    # training to the next: they fall off the table's clusters)
    queries = HELD_OUT[:30]
    assert recall_against_exact(table.uri, queries) >= 0.9
    assert not os.path.exists(table.uri + ".index-jobs")


# --- 5. a kill at any step of cleanup, then the rerun (or our own advice) ----------------------

class Killed(BaseException):
    """A driver killed at this point: nothing after it runs (no except clause catches it)."""


class Store:
    """A dataset with its default job directory, on local disk or on the S3 test server, that
    can be saved and put back exactly (every key, no folder markers)."""

    def __init__(self, kind, tmp_path, s3=None):
        self.kind, self.options = kind, {}
        if kind == "disk":
            self.uri = str(tmp_path / "ds")
        else:
            self.options, bucket = s3
            self.bucket, self.prefix = bucket, f"edges-{os.getpid()}-{id(self)}"
            self.uri = f"s3://{bucket}/{self.prefix}/ds"
        self.saved = str(tmp_path / "saved")

    def _client(self):
        import boto3

        o = self.options
        return boto3.client("s3", endpoint_url=o["aws_endpoint"], aws_access_key_id=o["aws_access_key_id"],
                            aws_secret_access_key=o["aws_secret_access_key"], region_name="us-east-1")

    def keys(self, prefix=""):
        c, out = self._client(), []
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/{prefix}"):
            out += [o["Key"][len(self.prefix) + 1:] for o in page.get("Contents", [])]
        return out

    def save(self):
        import shutil

        if self.kind == "disk":
            for name in ("ds", "ds.index-jobs"):
                shutil.copytree(os.path.join(os.path.dirname(self.uri), name), os.path.join(self.saved, name),
                                symlinks=True)
        else:
            c = self._client()
            self.snapshot = {k: c.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{k}")["Body"].read()
                             for k in self.keys()}

    def restore(self):
        import shutil

        if self.kind == "disk":
            for name in ("ds", "ds.index-jobs"):
                here = os.path.join(os.path.dirname(self.uri), name)
                shutil.rmtree(here, ignore_errors=True)
                shutil.copytree(os.path.join(self.saved, name), here, symlinks=True)
        else:
            c = self._client()
            for k in self.keys():
                c.delete_object(Bucket=self.bucket, Key=f"{self.prefix}/{k}")
            for k, body in self.snapshot.items():
                c.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{k}", Body=body)

    def index_dirs(self):
        if self.kind == "disk":
            path = os.path.join(self.uri, "_indices")
            return set(os.listdir(path)) if os.path.isdir(path) else set()
        return {k.split("/")[2] for k in self.keys("ds/_indices/") if k.count("/") >= 3}

    def job_files(self):
        if self.kind == "disk":
            root = self.uri + ".index-jobs"
            return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs] if os.path.isdir(root) else []
        return self.keys("ds.index-jobs/")

    def markers(self):
        """Zero-byte "folder" objects (keys ending in /): one-node Lance writes none."""
        return [] if self.kind == "disk" else [k for k in self.keys() if k.endswith("/")]


def _store_kinds():
    return ["disk", "s3"]


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    import boto3
    from test_object_store import KEY_ID, SECRET, start_moto, stop

    proc, port = start_moto(tmp_path_factory.mktemp("moto"))
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                 region_name="us-east-1").create_bucket(Bucket="edges")
    yield ({"aws_endpoint": endpoint, "allow_http": "true", "aws_access_key_id": KEY_ID,
            "aws_secret_access_key": SECRET, "aws_region": "us-east-1"}, "edges")
    stop(proc)


def _write_table(store, rows=4000, per_fragment=1000):
    import lance
    import pyarrow as pa
    from conftest import fsl

    from spark_lance_index.demo import clustered_vectors

    vectors = clustered_vectors(rows, 32, seed=11)
    lance.write_dataset(pa.table({"id": np.arange(rows), "vector": fsl(vectors)}), store.uri,
                        max_rows_per_file=per_fragment, storage_options=store.options or None)
    return vectors


def _searchable(store, version, vectors):
    """A nearest search through the index at `version` (it reads the index files)."""
    import lance

    ds = lance.dataset(store.uri, version=version, storage_options=store.options or None)
    hits = ds.to_table(nearest={"column": "vector", "q": vectors[7], "k": 5, "nprobes": 4}, columns=["id"])
    return 7 in hits.column("id").to_pylist()


def _count_deletes(monkeypatch, kill_at=None):
    """Count (and at `kill_at`, stop like a killed driver) every delete the job makes."""
    from spark_lance_index import storage

    calls = []
    for method in ("delete_file", "delete_dir", "remove_if_empty"):
        real = getattr(storage.Files, method)

        def wrapped(self, *args, _real=real, _method=method, **kwargs):
            if kill_at is not None and len(calls) == kill_at:
                raise Killed(f"killed before {_method}{args}")
            calls.append((_method, args[0] if args else ""))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(storage.Files, method, wrapped)
    return calls


def _as_if_dead(store, config):
    """The killed run's lease files name a process that no longer exists (in a real kill, the
    driver's)."""
    import json
    import subprocess

    from spark_lance_index.resume import _job_state, job_identity

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    files = _job_state(config, job_identity)[1].files
    for name in files.list("lease"):
        record = json.loads(files.read(f"lease/{name}"))
        files.write(f"lease/{name}", json.dumps({**record, "pid": dead.pid}).encode())


@pytest.mark.parametrize("kind", _store_kinds())
def test_a_kill_at_any_step_of_cleanup_is_finished_by_the_rerun_and_never_deletes_what_a_version_uses(
        spark, tmp_path, monkeypatch, kind, request):
    """The driver dies after its commit, at each step of its cleanup in turn. The rerun of the
    same command finishes it (exit 0, the job directory and every leftover gone), and neither
    it nor our own advice (a rerun with --replace) deletes a directory any version uses: the
    index at the commit's version still answers a nearest search."""
    import faults
    import lance

    from spark_lance_index import pipeline

    store = Store(kind, tmp_path, request.getfixturevalue("s3_server") if kind == "s3" else None)
    vectors = _write_table(store)
    config = make_config({}, {"uri": store.uri, "column": "vector", "num_partitions": 8, "rows_per_task": 1000,
                              "verify_queries": 0, "storage_options": store.options})
    faults.die_after_commit(monkeypatch, pipeline, lambda: pipeline.run(config, spark=spark))
    committed = lance.dataset(store.uri, storage_options=store.options or None).version
    store.save()
    with monkeypatch.context() as m:  # one clean finish, to learn the steps
        steps = _count_deletes(m)
        pipeline.run(config, spark=spark)
    kinds = [f"{method}:{os.path.dirname(str(name)) or name}" for method, name in steps]
    # every change of kind of step, and the first and last step: a kill before each
    points = sorted({0, len(steps) - 1} | {i for i in range(1, len(steps)) if kinds[i] != kinds[i - 1]})
    assert len(points) >= 5, steps
    for point in points:
        store.restore()
        with monkeypatch.context() as m:
            _count_deletes(m, kill_at=point)
            with pytest.raises(Killed):
                pipeline.run(config, spark=spark)
        _as_if_dead(store, config)
        finished = point > steps.index(("delete_file", "commit.json"))
        if finished:  # the job was done: a rerun is refused as after any finished build, and
            # what is left (a dead run's lease file, empty folders) goes with `discard`
            from spark_lance_index.discard_jobs import run_discard
            from spark_lance_index.errors import InputError

            with pytest.raises(InputError, match="already exists"):
                pipeline.run(config, spark=spark)
            assert all("/lease/" in str(f) or str(f).endswith("/index.json") for f in store.job_files()), \
                store.job_files()
            run_discard(config)
        else:
            advice = point == points[len(points) // 2]  # once: the advised --replace rerun instead
            rerun = config.with_settings(replace=True) if advice else config
            result = pipeline.run(rerun, spark=spark)
            assert result.outcome == "succeeded", (point, steps[point])
        assert _searchable(store, committed, vectors), f"index files of version {committed} deleted at {steps[point]}"
        latest = lance.dataset(store.uri, storage_options=store.options or None)
        in_use = {str(s.uuid) for v in latest.versions()
                  for i in latest.checkout_version(v["version"]).describe_indices() for s in i.segments}
        assert store.index_dirs() == in_use, (point, steps[point])  # no leftover, nothing used deleted
        assert store.job_files() == [], (point, steps[point], store.job_files())
        assert store.markers() == [], store.markers()


# --- 6 and 8. the lease: two runs never both hold it, on disk and on S3 --------------------------

def _job_files(kind, tmp_path, request, name):
    from spark_lance_index.storage import Files, locate

    if kind == "disk":
        return Files(locate(str(tmp_path / name)), {})
    options, bucket = request.getfixturevalue("s3_server")
    return Files(locate(f"s3://{bucket}/lease-{os.getpid()}-{name}"), options)


class SlowFiles:
    """A job directory whose store answers one kind of request late (tail latency): `step` is
    "write", "listing" or "read", delayed by `delay` seconds before it runs."""

    def __init__(self, files, step, delay):
        self._files, self._step, self._delay = files, step, delay

    def __getattr__(self, name):
        real = getattr(self._files, name)
        if name != self._step:
            return real

        def slow(*args, **kwargs):
            import time

            time.sleep(self._delay)
            return real(*args, **kwargs)

        return slow


def test_a_claim_the_store_cannot_judge_leaves_no_lease_file(tmp_path):
    """The listing after this run wrote its lease file fails (a throttled store): the run stops
    with one line and removes its own file, so the next run is not kept out for a minute."""
    from spark_lance_index.errors import JobBusyError, JobError
    from spark_lance_index.lease import Lease, read_runs
    from spark_lance_index.storage import Files, locate

    files = Files(locate(str(tmp_path / "job")), {})

    class ListingFails:
        def __getattr__(self, name):
            if name == "listing":
                def fail(*args, **kwargs):
                    raise OSError("503 Slow Down")
                return fail
            return getattr(files, name)

    with pytest.raises(JobError, match="cannot write the job directory") as err:
        Lease(ListingFails(), "job").acquire()
    assert not isinstance(err.value, JobBusyError) and read_runs(files) == {}
    lease = Lease(files, "job")
    lease.acquire()  # not kept out
    lease.release()


@pytest.mark.parametrize("kind", _store_kinds())
def test_two_runs_never_both_hold_the_lease_whatever_step_of_either_is_delayed(tmp_path, request, kind):
    """Two runs start together; one store request of one of them (its write, its listing or
    its reads) lands 0 to 120 ms late. At most one holds the job, the other has stopped and left
    nothing behind, and the holder still holds it."""
    import threading

    from spark_lance_index.errors import JobBusyError
    from spark_lance_index.lease import Lease, read_runs

    cases = [(step, delay, slow) for step in ("write", "listing", "read") for delay in (0.0, 0.05, 0.12)
             for slow in (0, 1)]
    for n, (step, delay, slow) in enumerate(cases):
        files = _job_files(kind, tmp_path, request, f"job{n}")
        leases = [Lease(SlowFiles(files, step, delay) if i == slow else files, f"job{n}") for i in range(2)]
        outcome = [None, None]
        start = threading.Barrier(2)

        def contend(i, start=start, leases=leases, outcome=outcome):
            start.wait()
            try:
                leases[i].acquire()
                outcome[i] = "held"
            except JobBusyError:
                outcome[i] = "busy"

        threads = [threading.Thread(target=contend, args=(i,)) for i in range(2)]
        [t.start() for t in threads]
        [t.join(30) for t in threads]
        case = (step, delay, "second" if slow else "first", outcome)
        assert outcome.count("held") <= 1, case
        holders = [lease for lease, o in zip(leases, outcome) if o == "held"]
        assert set(read_runs(files)) == {lease.owner for lease in holders}, case  # the loser left nothing
        for lease in holders:
            lease.check()  # still held: the loser's attempt took nothing from it
            lease.release()
    # two that start together may both back off; a rerun then goes through
    files = _job_files(kind, tmp_path, request, "again")
    lease = Lease(files, "again")
    lease.acquire()
    lease.release()


def _foreign(files, name, **record):
    import json

    files.write(f"lease/{name}.json", json.dumps({"host": "another-host", "pid": 1, "holding": True, **record}).encode())


@pytest.mark.parametrize("kind", _store_kinds())
def test_an_impossible_lease_never_blocks_forever_and_says_what_it_is(tmp_path, request, kind, monkeypatch):
    """A heartbeat written as a string, one a year in the future from another host, a legacy
    lease.json that is empty: none is a traceback, none blocks past the timeout (age is read
    from the store's clock, never from what a file says), and each is named."""
    import time

    from spark_lance_index import lease as lease_module
    from spark_lance_index.errors import JobBusyError
    from spark_lance_index.lease import Lease

    monkeypatch.setattr(lease_module, "LEASE_TIMEOUT", 2.0)
    files = _job_files(kind, tmp_path, request, "odd")
    _foreign(files, "future", heartbeat=time.time() + 365 * 86400)
    _foreign(files, "stringly", heartbeat="yesterday")
    files.write("lease.json", b"")
    with pytest.raises(JobBusyError, match=r"another run of this job is active \(host another-host.*discard") as err:
        Lease(files, "odd").acquire()
    assert "\n" not in str(err.value) and "-3153" not in str(err.value)
    time.sleep(3.2)  # past the timeout on the store's clock (S3 keeps whole seconds)
    lease = Lease(files, "odd")
    lease.acquire()  # the stale ones are taken over, the unreadable one removed
    assert files.list("lease") == [f"{lease.owner}.json"] and not files.exists("lease.json")
    lease.release()


@pytest.mark.parametrize("kind", _store_kinds())
def test_a_run_that_cannot_refresh_its_lease_stops_before_another_may_take_over(tmp_path, request, kind, monkeypatch):
    from spark_lance_index import lease as lease_module
    from spark_lance_index.lease import Lease, LeaseLostError, task_holds

    monkeypatch.setattr(lease_module, "LEASE_TIMEOUT", 1.0)
    monkeypatch.setattr(lease_module, "HEARTBEAT_SECONDS", 100.0)  # no heartbeat lands
    files = _job_files(kind, tmp_path, request, "fence")
    lease = Lease(files, "fence")
    lease.acquire()
    lease.check()
    with task_holds(files, lease.owner, "a task"):
        pass  # a task starts while its run holds the job
    import time

    time.sleep(0.6)  # half the timeout without a heartbeat
    with pytest.raises(LeaseLostError, match="stops without committing or deleting"):
        lease.check()
    lease.release()


@pytest.mark.parametrize("kind", _store_kinds())
def test_tasks_of_a_run_whose_driver_is_gone_keep_others_out_and_start_no_more(tmp_path, request, kind, monkeypatch):
    """A killed Spark Connect client leaves its tasks running on the server: while they run, a
    rerun is told so and waits; a task that starts after its driver is gone stops before it
    writes; once they are gone the rerun takes the job over."""
    import json
    import subprocess
    import time

    from spark_lance_index import lease as lease_module
    from spark_lance_index.errors import JobBusyError
    from spark_lance_index.lease import Lease, LeaseLostError, task_holds

    monkeypatch.setattr(lease_module, "LEASE_TIMEOUT", 2.0)
    files = _job_files(kind, tmp_path, request, "orphans")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    files.write("lease/gone.json", json.dumps({"host": socket.gethostname(), "pid": dead.pid, "holding": True,
                                               "pidns": os.readlink("/proc/self/ns/pid")}).encode())
    files.write("lease/gone.task-1.json", json.dumps({"host": "executor-7", "pid": 99}).encode())
    with pytest.raises(JobBusyError, match="its driver is gone but 1 of its Spark tasks still run"):
        Lease(files, "orphans").acquire()
    time.sleep(3.2)  # the driver's file and the running task's heartbeat age out: it ended
    with pytest.raises(LeaseLostError, match="stops before writing"):
        with task_holds(files, "gone", "an orphan segment build"):  # one more task of the dead run
            pytest.fail("an orphan task ran")
    lease = Lease(files, "orphans")
    lease.acquire()
    assert files.list("lease") == [f"{lease.owner}.json"]
    lease.release()


# --- 4. Ctrl-C, and `discard` instead of "delete that directory" ---------------------------------

def _cli(*args, **kw):
    import subprocess

    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    return subprocess.run([sys.executable, "-m", "spark_lance_index", *args], capture_output=True, text=True,
                          timeout=kw.pop("timeout", 300), env=env, **kw)


def test_after_ctrl_c_only_a_failed_stage_is_taken_for_the_interrupt():
    """After Ctrl-C, a failed Spark stage (the cancelled job) ends the run as interrupted; a wrong
    commit, a changed dataset or a refusal keeps its own meaning and policy, and the command line
    forgets the press when it returns."""
    from spark_lance_index import interrupts, pipeline
    from spark_lance_index.errors import CommitCheckError, DatasetChangedError, InputError, SparkStageError

    try:
        interrupts._requested.set()
        assert interrupts.caused_by_interrupt(SparkStageError("cancelled"))
        assert interrupts.caused_by_interrupt(RuntimeError("Answer from Java side is empty"))
        for error in (CommitCheckError("wrong"), DatasetChangedError("moved"), InputError("bad")):
            assert not interrupts.caused_by_interrupt(error)
            assert pipeline.failure_policy(error) is not pipeline._cancel_jobs
        assert pipeline.failure_policy(SparkStageError("cancelled")) is pipeline._cancel_jobs
    finally:
        interrupts.uninstall()
    assert not interrupts.requested() and not interrupts.caused_by_interrupt(SparkStageError("x"))


@pytest.mark.jvm  # starts Spark itself
def test_ctrl_c_during_a_spark_job_is_always_an_interrupt():
    """Ctrl-C pressed at seven moments of a Spark job (its broadcast, its submission, its running
    tasks): each ends as KeyboardInterrupt, never as the error of a Py4J connection left
    mid-answer (which ended 1 run in 8 as "failed"), and the session still runs jobs after."""
    import subprocess

    proc = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "ctrl_c_probe.py"), "7"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"})
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines[-1] == "ok 0", proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sum(line.endswith(" KeyboardInterrupt") for line in lines) == 7


@pytest.mark.jvm  # starts Spark itself
def test_ctrl_c_ends_in_one_line_and_discard_removes_what_the_run_left(tmp_path):
    """Ctrl-C mid-build: exit 130 and one line that says what to do, no traceback. The discard
    command it names removes the interrupted run's state and its segment directories (no version
    uses them), and nothing else: a user's file in the job directory survives. The next build
    leaves nothing of the interrupted one in _indices."""
    import signal
    import subprocess
    import time

    import lance
    from conftest import committed_uuids, index_dirs, write_vectors

    data = write_vectors(tmp_path / "ds", 60_000, 64, rows_per_fragment=2000)
    version = lance.dataset(data.uri).version
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "notes.txt").write_text("the user's own file")
    build = ["build", "--uri", data.uri, "--column", "vector", "--num-partitions", "64", "--rows-per-task", "2000",
             "--master", "local[2]", "--job-dir", str(jobs), "--verify-queries", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "spark_lance_index", *build], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"})
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        folders = [d for d in jobs.iterdir() if d.is_dir()]
        if folders and (folders[0] / "segments").is_dir() and len(os.listdir(folders[0] / "segments")) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the build finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends the whole foreground group
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("spark-lance-index: interrupted; rerun the same command to resume, or "
                           f"`spark-lance-index discard --uri {data.uri} --column vector"), err[-2000:]
    assert "Traceback" not in err and "exited unexpectedly" not in err, err[-3000:]
    left = index_dirs(data.uri)
    assert left and not committed_uuids(data.uri)  # segment directories of the interrupted run
    discard = last.split("`")[1].split()[1:]
    done = _cli(*discard)
    assert done.returncode == 0 and "discarded job" in done.stdout, done.stderr[-2000:]
    assert index_dirs(data.uri) == set() and sorted(os.listdir(jobs)) == ["notes.txt"]
    assert lance.dataset(data.uri).version == version
    again = _cli(*build)
    assert again.returncode == 0, again.stderr[-2000:]
    assert index_dirs(data.uri) == committed_uuids(data.uri) and sorted(os.listdir(jobs)) == ["notes.txt"]


# --- 10. reports and job directories ----------------------------------------------------------

def test_an_unwritable_report_is_refused_before_spark(tmp_path):
    from conftest import dataset_state, write_vectors

    data = write_vectors(tmp_path / "ds", 2000, 32)
    before = dataset_state(data.uri)
    proc = _cli("build", "--uri", data.uri, "--column", "vector", "--report", "/proc/nope/r.json",
                "--master", "local[2]")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert lines == [lines[-1]] and "cannot write --report /proc/nope/r.json" in lines[-1]
    assert "Spark" not in proc.stderr and dataset_state(data.uri) == before
    assert not os.path.exists(data.uri + ".index-jobs")


def test_a_job_directory_the_job_created_is_removed_and_one_it_did_not_is_kept(spark, tmp_path):
    from conftest import write_vectors

    from spark_lance_index import pipeline

    data = write_vectors(tmp_path / "ds", 4000, 32, rows_per_fragment=1000)
    config = make_config({}, {"uri": data.uri, "column": "vector", "num_partitions": 8, "verify_queries": 0,
                              "job_dir": str(tmp_path / "new" / "jobs")})
    pipeline.run(config, spark=spark)
    assert not os.path.exists(tmp_path / "new" / "jobs")  # created by the job: removed once empty
    assert os.path.isdir(tmp_path / "new")  # its parent was not the job's
    (tmp_path / "mine").mkdir()
    pipeline.run(config.with_settings(job_dir=str(tmp_path / "mine"), replace=True), spark=spark)
    assert os.path.isdir(tmp_path / "mine") and os.listdir(tmp_path / "mine") == []  # the user's: kept


def test_verify_on_a_scalar_column_says_it_is_for_vector_indexes_and_update_takes_the_index_type(tmp_path):
    import lance
    from conftest import dataset_state, write_vectors

    from spark_lance_index.checks import run_verify
    from spark_lance_index.errors import InputError
    from spark_lance_index.resume import inspect_update

    data = write_vectors(tmp_path / "ds", 2000, 32)
    lance.dataset(data.uri).create_scalar_index("id", "BTREE", name="id_idx")
    before = dataset_state(data.uri)
    insp = inspect_update(make_config({}, {"uri": data.uri, "column": "id", "mode": "update"}))
    assert insp.params.index_type == "BTREE" and insp.update is not None and insp.update.is_noop
    with pytest.raises(InputError, match=r"no index named 'x_idx' on .* \(its indexes: id_idx on id\)"):
        inspect_update(make_config({}, {"uri": data.uri, "column": "id", "mode": "update", "index_name": "x_idx"}))
    with pytest.raises(InputError, match=r"`verify` is for vector indexes, and column 'id' holds int64 "
                                         r"\(indexed by 'id_idx' \(BTree\)\): .*check a scalar or full-text"):
        run_verify(make_config({}, {"uri": data.uri, "column": "id", "index_name": "id_idx"}))
    assert dataset_state(data.uri) == before


def test_tasks_of_a_run_that_does_not_hold_the_job_write_nothing(tmp_path):
    """A segment build or a merge started for a run that does not hold the job (its driver is
    gone, or another run took over) stops before its marker, its segment or its merge record."""
    import lance
    from conftest import index_dirs, write_vectors

    from spark_lance_index import pipeline
    from spark_lance_index.commit import MergeTask, merge_segments
    from spark_lance_index.lease import LeaseLostError
    from spark_lance_index.segment_build import run_task

    data = write_vectors(tmp_path / "ds", 4000, 32, rows_per_fragment=1000)
    config = make_config({}, {"uri": data.uri, "column": "vector", "num_partitions": 8, "rows_per_task": 2000})
    insp = pipeline.inspect_inputs(config)
    artifacts = pipeline.train(config, insp.snap, insp.params)
    groups = pipeline.plan(config, insp.snap, insp.params, insp.snap.live_fragments, 2)
    ghost = pipeline.make_tasks(config, insp.snap, insp.params, groups, insp.job_id, lease_owner="ghost")
    with pytest.raises(LeaseLostError, match="stops before writing"):
        run_task(ghost[0], artifacts, insp.state, 0)
    assert index_dirs(data.uri) == set() and insp.state.attempts() == {} and not insp.state.pending_writes()
    built = [run_task(t, artifacts, insp.state, 0) for t in pipeline.make_tasks(
        config, insp.snap, insp.params, groups, insp.job_id)]  # no lease: tests calling tasks directly
    before = index_dirs(data.uri)
    with pytest.raises(LeaseLostError, match="stops before writing"):
        merge_segments(MergeTask(data.uri, insp.snap.location, insp.snap.version, tuple(r.segment for r in built),
                                 4000, {}, "ghost"), insp.state)
    assert index_dirs(data.uri) == before and not insp.state.pending_writes()
    assert lance.dataset(data.uri).describe_indices() == []
