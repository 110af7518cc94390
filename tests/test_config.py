"""Config: defaults, TOML under flags, and parameter checks that need no dataset or JVM."""

import dataclasses
import os
from collections.abc import Mapping

import pytest

from spark_lance_index.cli import build_parser, config_from_args
from spark_lance_index.config import GROUPS, BuildConfig, load_toml, make_config
from spark_lance_index.errors import InputError

ROOT = os.path.dirname(os.path.dirname(__file__))


def test_conf_defaults_file_matches_the_code():
    documented = load_toml(os.path.join(ROOT, "conf", "defaults.toml"))
    code = BuildConfig.of().flat()
    for key, value in documented.items():
        if key == "storage_options":
            continue
        assert code[key] == (tuple(value) if isinstance(value, list) else value), key
    # every default that is a plain value is documented
    plain = {k for k, v in code.items() if v is not None and v != "" and not isinstance(v, Mapping)}
    assert plain <= set(documented), plain - set(documented)


def test_flags_override_toml(tmp_path):
    cfg = tmp_path / "job.toml"
    cfg.write_text(
        'uri = "/data/t"\ncolumn = "emb"\nindex-type = "IVF_PQ"\nnum_partitions = 64\n'
        '[storage_options]\naws_region = "eu-west-1"\naws_endpoint = "http://x"\n'
    )
    args = build_parser().parse_args(
        ["build", "--config", str(cfg), "--index-type", "ivf_rq", "--num-bits", "4",
         "--storage-option", "aws_region=us-east-1"]
    )
    config = config_from_args(args)
    assert (config.dataset.uri, config.index.column, config.index.index_type, config.index.num_bits) == \
        ("/data/t", "emb", "IVF_RQ", 4)
    assert config.index.num_partitions == 64  # from the file, not overridden
    assert dict(config.dataset.storage_options) == {"aws_region": "us-east-1", "aws_endpoint": "http://x"}
    assert config.index.name == "emb_idx"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"index_type": "DISKANN"}, "unknown index type"),
        # a flag of another index type is refused, not ignored (one-node Lance ignores some)
        ({"index_type": "IVF_PQ", "num_bits": 4}, "--num-bits applies to IVF_RQ, not to IVF_PQ"),
        ({"index_type": "IVF_SQ", "num_bits": 4}, "--num-bits applies to IVF_RQ, not to IVF_SQ"),
        ({"index_type": "IVF_RQ", "num_sub_vectors": 8}, "--num-sub-vectors applies to IVF_PQ, IVF_HNSW_PQ"),
        ({"index_type": "IVF_FLAT", "m": 16}, "--m applies to IVF_HNSW_FLAT, IVF_HNSW_SQ, IVF_HNSW_PQ, not to IVF_FLAT"),
        ({"index_type": "IVF_SQ", "ef_construction": 100}, "--ef-construction applies to IVF_HNSW"),
        ({"index_type": "IVF_PQ", "max_level": 3}, "--max-level applies to IVF_HNSW"),
        # HNSW parameters Lance would refuse on the executors
        ({"index_type": "IVF_HNSW_SQ", "m": 3}, "at least 4"),
        ({"index_type": "IVF_HNSW_FLAT", "m": 32, "ef_construction": 16}, "--ef-construction 16 is below --m 32"),
        ({"index_type": "IVF_HNSW_PQ", "m": 200}, "--ef-construction 150 \\(the default\\) is below --m 200"),
        ({"index_type": "IVF_HNSW_FLAT", "ef_construction": 0}, "--ef-construction must be a positive"),
        ({"index_type": "IVF_HNSW_FLAT", "max_level": 0}, "--max-level 0 is outside"),
        ({"metric": "hamming"}, "unknown metric"),
        ({"num_bits": 0}, "1 to 9"),
        ({"num_bits": 10}, "1 to 9"),
        ({"num_partitions": 0}, "positive"),
        ({"rows_per_task": 10, "fragments_per_task": 2}, "not both"),
        ({"uri": ""}, "--uri is required"),
    ],
)
def test_bad_parameters_are_refused(values, message):
    with pytest.raises(InputError, match=message):
        make_config({}, {"uri": "/x", "column": "v", **values})


def test_unknown_setting_in_file(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('uri = "/x"\nnum_partition = 4\n')
    with pytest.raises(InputError, match="unknown setting 'num_partition'"):
        load_toml(str(cfg))


def test_scheduler_argument_styles_are_normalised():
    from spark_lance_index.cli import normalise_argv

    assert normalise_argv(["--uri=/d", "--column=v", "--replace=true", "--verbose=false"]) == [
        "build", "--uri=/d", "--column=v", "--replace"]
    assert normalise_argv(["uri=/d", "index_type=IVF_PQ", "--storage-option", "aws_region=x"]) == [
        "build", "--uri=/d", "--index-type=IVF_PQ", "--storage-option", "aws_region=x"]
    assert normalise_argv(["verify", "--uri", "s3://b/k=v"]) == ["verify", "--uri", "s3://b/k=v"]
    assert normalise_argv(["uri=/d", "command=update", "column=v"]) == ["update", "--uri=/d", "--column=v"]
    assert normalise_argv(["--uri", "/d", "--command", "Update"]) == ["update", "--uri", "/d"]
    args = build_parser().parse_args(normalise_argv(["--command=update", "--uri=/d", "--segment-ratio=2"]))
    assert (args.command, args.segment_ratio) == ("update", 2)
    args = build_parser().parse_args(normalise_argv(["--uri=/d", "--column=v", "--nprobes", "4", "8"]))
    assert (args.command, args.uri, args.nprobes) == ("build", "/d", [4, 8])


def test_a_config_file_never_turns_a_build_into_an_update(tmp_path):
    cfg = tmp_path / "job.toml"
    cfg.write_text('uri = "/data/t"\ncolumn = "emb"\nmode = "update"\n')
    assert config_from_args(build_parser().parse_args(["build", "--config", str(cfg)])).runtime.mode == "build"
    assert config_from_args(build_parser().parse_args(["update", "--config", str(cfg)])).runtime.mode == "update"


def test_merge_memory_takes_spark_sizes_and_refuses_other_text(capsys):
    args = build_parser().parse_args(["build", "--uri", "x", "--column", "v", "--merge-memory", "16g"])
    assert config_from_args(args).sizing.merge_memory == 16 << 30
    with pytest.raises(SystemExit):
        build_parser().parse_args(["build", "--uri", "x", "--column", "v", "--merge-memory", "lots"])
    assert "'lots' is not a size" in capsys.readouterr().err


def test_sizes_in_a_config_file_read_as_the_flags_do(tmp_path):
    cfg = tmp_path / "job.toml"
    cfg.write_text('uri = "/d"\ncolumn = "v"\nmerge-memory = "16g"\nmax_sample_bytes = 1048576\n')
    config = config_from_args(build_parser().parse_args(["build", "--config", str(cfg)]))
    assert (config.sizing.merge_memory, config.training.max_sample_bytes) == (16 << 30, 1 << 20)
    cfg.write_text('uri = "/d"\ncolumn = "v"\nmerge_memory = "lots"\n')
    with pytest.raises(InputError, match="merge-memory 'lots' is not a size"):
        config_from_args(build_parser().parse_args(["build", "--config", str(cfg)]))


def test_text_options_reach_lance_as_one_mapping_from_flags_file_and_keywords(tmp_path):
    from spark_lance_index.api import _config

    cfg = tmp_path / "job.toml"
    cfg.write_text('uri = "/d/t"\ncolumn = "title"\nindex_type = "INVERTED"\nstem = true\n'
                   '[fts_options]\nnum_workers = 2\nlower_case = true\n')
    args = build_parser().parse_args(["build", "--config", str(cfg), "--no-lower-case", "--custom-stop-words", "a",
                                      "b", "--fts-option", "memory_limit=512"])
    from_cli = config_from_args(args)
    # a named option wins over the same key through --fts-option or [fts_options]
    assert dict(from_cli.index.text_options) == {"stem": True, "num_workers": 2, "lower_case": False,
                                           "custom_stop_words": ["a", "b"], "memory_limit": 512}
    from_api = _config("build", "/d/t", "title", {"index_type": "INVERTED", "stem": True, "lower_case": False,
                                                  "custom_stop_words": ["a", "b"],
                                                  "fts_options": {"num_workers": 2, "memory_limit": 512}})
    assert dict(from_api.index.text_options) == dict(from_cli.index.text_options)
    cfg.write_text('uri = "/d/t"\ncolumn = "title"\nindex_type = "INVERTED"\nstem = "yes"\n')
    with pytest.raises(InputError, match="stem in .* must be true or false, got 'yes'"):
        load_toml(str(cfg))
    # settings in six groups, the widest 12 (one flat class of 40 before, 53 before that): the
    # tokenizer's 14 fields are one mapping
    assert [len(dataclasses.fields(g)) for g in GROUPS.values()] == [4, 12, 5, 6, 7, 6]
    assert sum(len(dataclasses.fields(g)) for g in GROUPS.values()) == 40
