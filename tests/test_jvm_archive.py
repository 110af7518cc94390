"""The local driver JVM's class archive (jvm_archive.py): keyed on what it was made for, mapped
when it fits, set aside when a JVM cannot start with it, and only our orphans removed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spark_lance_index import jvm_archive
from spark_lance_index.spark import LOCAL_JAVA_OPTIONS


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_LANCE_INDEX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SPARK_LANCE_INDEX_JVM_ARCHIVE", raising=False)
    return tmp_path / "cache"


def test_the_key_is_the_java_the_options_and_the_spark_jars(cache, tmp_path):
    java = tmp_path / "java"
    java.write_bytes(b"a java")
    first = jvm_archive.archive_path(str(java), LOCAL_JAVA_OPTIONS)
    assert first.parent == cache and first.name.startswith(jvm_archive.PREFIX)
    assert jvm_archive.archive_path(str(java), LOCAL_JAVA_OPTIONS) == first
    assert jvm_archive.archive_path(str(java), LOCAL_JAVA_OPTIONS + " -Xmx1g") != first
    java.write_bytes(b"another java build")
    assert jvm_archive.archive_path(str(java), LOCAL_JAVA_OPTIONS) != first


def test_options_only_for_an_archive_that_is_there_and_not_turned_off(cache, tmp_path, monkeypatch):
    java = tmp_path / "java"
    java.write_bytes(b"a java")
    assert jvm_archive.options_for(str(java), LOCAL_JAVA_OPTIONS) == ("", None)
    path = jvm_archive.archive_path(str(java), LOCAL_JAVA_OPTIONS)
    cache.mkdir()
    path.write_bytes(b"an archive")
    options, found = jvm_archive.options_for(str(java), LOCAL_JAVA_OPTIONS)
    assert found == path and f"-XX:SharedArchiveFile={path}" in options and "-Xshare:auto" in options
    assert f"-XX:ErrorFile={cache}/" in options  # a crash log lands beside it, not in the user's folder
    monkeypatch.setenv("SPARK_LANCE_INDEX_JVM_ARCHIVE", "off")
    assert jvm_archive.options_for(str(java), LOCAL_JAVA_OPTIONS) == ("", None)


def test_only_our_archives_made_for_a_java_or_spark_gone_are_removed(cache, tmp_path):
    cache.mkdir()
    here, gone = tmp_path / "spark-here", tmp_path / "spark-gone"
    here.mkdir()
    for stem, made_for in (("spark-driver-aaaa", here), ("spark-driver-bbbb", gone)):
        for suffix in (".jsa", ".log"):
            (cache / f"{stem}{suffix}").write_bytes(b"x")
        (cache / f"{stem}.made-for").write_text(f"{sys.executable}\n{made_for}\n")
    (cache / "users-file.jsa").write_bytes(b"not ours")
    spaced = tmp_path / "My Projects" / "jars"  # a path with a space is one path
    spaced.mkdir(parents=True)
    (cache / "spark-driver-cccc.jsa").write_bytes(b"x")
    (cache / "spark-driver-cccc.made-for").write_text(f"{sys.executable}\n{spaced}\n")
    superseded = f"{sys.executable}\n{tmp_path / 'spark-now'}\n"  # same Java and Spark folder, remade
    for stem in ("spark-driver-dddd", "spark-driver-eeee"):
        (cache / f"{stem}.jsa").write_bytes(b"x")
        (cache / f"{stem}.made-for").write_text(superseded)
    (tmp_path / "spark-now").mkdir()
    (cache / "hs_err_pid12345.log").write_text("a crash")
    (cache / "spark-driver-ffff.999999999.recording").write_bytes(b"x")  # no such process
    jvm_archive._remove_orphans(cache, cache / "spark-driver-eeee.jsa", superseded)
    assert sorted(p.name for p in cache.iterdir()) == [
        "spark-driver-aaaa.jsa", "spark-driver-aaaa.log", "spark-driver-aaaa.made-for",
        "spark-driver-cccc.jsa", "spark-driver-cccc.made-for",
        "spark-driver-eeee.jsa", "spark-driver-eeee.made-for", "users-file.jsa"]


def _doctor(cache: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPARK_LANCE_INDEX_CACHE": str(cache), "PYSPARK_PYTHON": sys.executable}
    return subprocess.run([sys.executable, "-m", "spark_lance_index", "doctor", "--master", "local[1]"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


@pytest.mark.jvm
def test_made_once_mapped_by_the_driver_and_a_damaged_one_set_aside(cache, tmp_path):
    env = {**os.environ, "SPARK_LANCE_INDEX_CACHE": str(cache), "PYSPARK_PYTHON": sys.executable}
    made = subprocess.run([sys.executable, "-m", "spark_lance_index.jvm_archive"], capture_output=True,
                          text=True, timeout=600, env=env)
    assert made.returncode == 0 and "made" in made.stdout, made.stdout + made.stderr[-3000:]
    archive = next(cache.glob("*.jsa"))
    assert not list(cache.glob("*.recording"))

    proc = _doctor(cache, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert f"ok   JVM class archive: the driver mapped {archive}" in proc.stdout

    # a truncated archive crashes a JVM that maps it (SIGBUS): the job starts without it
    archive.chmod(0o644)
    archive.write_bytes(archive.read_bytes()[:1_000_000])
    proc = _doctor(cache, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "did not start with its class archive" in proc.stderr and "skip JVM class archive" in proc.stdout
    assert not archive.exists() and archive.with_suffix(".unusable").exists()
    assert not list(tmp_path.glob("hs_err*"))  # the crash log went to the cache folder
    proc = _doctor(cache, tmp_path)  # set aside: never mapped again
    assert proc.returncode == 0 and "did not start" not in proc.stderr
