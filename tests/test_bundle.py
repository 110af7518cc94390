"""The Databricks bundle (conf/databricks): valid against the databricks-bundles job model, its
named parameters and settings file parsed by the job as a wheel task passes them, and the paths
Lance can open said clearly."""

from __future__ import annotations

import os
import re

import pytest
import yaml
from conftest import write_vectors

from spark_lance_index.cli import build_parser, config_from_args, normalise_argv
from spark_lance_index.errors import InputError
from spark_lance_index.store_errors import refuse_unreadable_scheme

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLE = os.path.join(ROOT, "conf", "databricks")


def bundle() -> dict:
    with open(os.path.join(BUNDLE, "databricks.yml")) as f:
        return yaml.safe_load(f)


def test_every_job_of_the_bundle_is_a_valid_databricks_job():
    from databricks.bundles.jobs import Job

    jobs = bundle()["resources"]["jobs"]
    assert sorted(jobs) == ["build_vector_index", "update_vector_index"]
    for job in jobs.values():
        parsed = Job.from_dict(job)  # strict: an unknown or misplaced field raises
        (task,) = parsed.tasks
        assert task.python_wheel_task.entry_point == "spark-lance-index"


def wheel_task_config(job: dict, variables: dict):
    """The BuildConfig the job sees when Databricks passes the task's named_parameters."""
    params = job["tasks"][0]["python_wheel_task"]["named_parameters"]
    def resolve(value: object) -> str:
        return re.sub(r"[$][{]var[.](\w+)[}]", lambda m: variables[m.group(1)], str(value))

    argv = [f"--{k}={resolve(v)}" for k, v in params.items()]
    args = build_parser().parse_args(normalise_argv(argv))
    return args.command, config_from_args(args)


def test_the_named_parameters_and_the_settings_file_reach_the_job(tmp_path):
    data = write_vectors(tmp_path / "ds", 600, 8)
    settings = tmp_path / "job.toml"
    text = open(os.path.join(BUNDLE, "job.toml")).read()
    # several storage options through the file: what one named parameter cannot carry
    settings.write_text(text.replace('# aws_region = "us-east-1"', 'aws_region = "us-east-1"\nallow_http = "true"'))
    variables = {"uri": data.uri, "column": "vector", "report": "", "settings": str(settings)}
    jobs = bundle()["resources"]["jobs"]

    command, config = wheel_task_config(jobs["build_vector_index"], variables)
    assert command == "build" and config.dataset.uri == data.uri and config.index.column == "vector"
    assert config.index.index_type == "IVF_RQ" and config.index.num_bits is None  # the README's default: 5 bits
    assert (config.checks.verify_queries, config.checks.min_recall) == (100, 0.9)
    assert dict(config.dataset.storage_options) == {"aws_region": "us-east-1", "allow_http": "true"}
    assert not config.runtime.report

    command, config = wheel_task_config(jobs["update_vector_index"], variables)
    assert (command, config.runtime.mode, config.checks.min_recall) == ("update", "update", 0.9)

    # the bundle's variables say which paths work, and the default settings file is the synced one
    v = bundle()["variables"]
    assert "/Volumes/" in v["uri"]["description"] and "cannot open dbfs:/" in v["uri"]["description"]
    assert v["settings"]["default"] == "${workspace.file_path}/job.toml"
    assert os.path.exists(os.path.join(BUNDLE, "job.toml"))


@pytest.mark.parametrize("uri, advice", [
    ("dbfs:/mnt/items.lance", "/Volumes/<catalog>/<schema>/<volume>"),
    ("dbfs:///mnt/items.lance", "/Volumes/"),
    ("s3a://bucket/items.lance", "write s3://"),
    ("wasbs://c@acct.blob.core.windows.net/items.lance", "abfss://"),
    ("hdfs://nn/items.lance", "does not read HDFS"),
])
def test_paths_lance_cannot_open_are_refused_with_what_it_can(uri, advice):
    with pytest.raises(InputError, match=re.escape(advice)):
        refuse_unreadable_scheme(uri)


@pytest.mark.parametrize("uri", ["/Volumes/main/default/vol/items.lance", "s3://bucket/items.lance",
                                 "abfss://c@acct.dfs.core.windows.net/items.lance", "az://c/items.lance",
                                 "gs://bucket/items.lance", "file:///data/items.lance", "relative/items.lance"])
def test_paths_lance_opens_pass(uri):
    refuse_unreadable_scheme(uri)
