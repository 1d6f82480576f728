"""Obvious bad input is refused before any work, with exit 2 and a message naming the option, value and fix."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from seg_cli.methods import METHOD_NAMES, resolve_method
from seg_cli.params import parse_concept_names, parse_repo_id, parse_split_name

GOOD_WORLD = ["world", "generate", "--out", "w", "--split", "val", "--num", "4", "--seed", "0"]


def _world(**changes: str) -> list[str]:
    args = list(GOOD_WORLD)
    for option, value in changes.items():
        args[args.index(f"--{option}") + 1] = value
    return args


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (_world(num="0"), ["'--num'", "0 is too small", ">= 1"]),
        (_world(num="many"), ["'--num'", "integer"]),
        (_world(seed="-1"), ["'--seed'", "-1 is too small", ">= 0"]),
        (_world(split="train"), ["'--split'", "'train'", "index, pairs, val, test, shift"]),
        ([*GOOD_WORLD, "--format", "xml"], ["'--format'", "xml", "coco", "voc"]),
        ([*GOOD_WORLD, "--size", "16"], ["'--size'", "16 is too small", ">= 32"]),
        (["world", "generate", "--split", "val", "--num", "1", "--seed", "0"], ["'--out'"]),
        (
            ["eval", "--method", "recoo", "--dataset", ".", "--out", "r.json"],
            ["'--method'", "'recoo'", "choose one of: maskclip", "Did you mean 'reco'?"],
        ),
        (["eval", "--method", "reco", "--dataset", "no/such/dir", "--out", "r.json"], ["'--dataset'", "no/such/dir"]),
        (["train", "segformer"], ["METHOD", "'segformer'", "maskclip, dense-clip, groupvit"]),
        (["train", "reco", "--config", "missing.yaml"], ["'--config'", "missing.yaml"]),
        (["retrieve", "index", ".", "--out", "i.faiss", "--kind", "hnsw2"], ["'--kind'", "hnsw2", "flat"]),
        (
            ["retrieve", "curate", "--index", "{file}", "--concepts", "cat,,dog", "--out", "o"],
            ["'--concepts'", "item 2 of 'cat,,dog' is empty"],
        ),
        (
            ["retrieve", "embed", ".", "--model", "m", "--out", "e", "--batch-size", "0"],
            ["'--batch-size'", "0 is too small"],
        ),
        (["zoo", "push", ".", "just-a-name"], ["'REPO_ID'", "'just-a-name'", "namespace/name"]),
        (
            ["predict", "missing.png", "--method", "reco", "--classes", "cat"],
            ["'IMAGE'", "missing.png", "does not exist"],
        ),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) and not str(value[0]).startswith("'") else "",
)
def test_bad_input_exits_2_naming_option_and_value(
    run_seg: Callable[..., Any], tmp_path: Path, args: list[str], expected: list[str]
) -> None:
    a_file = tmp_path / "a.bin"
    a_file.write_bytes(b"")
    result = run_seg(*(arg.format(file=a_file) for arg in args))
    assert result.exit_code == 2
    assert "Not available yet" not in result.text  # refused by validation, before the body runs
    for fragment in expected:
        assert fragment in result.text


def test_predict_refuses_bad_classes(run_seg: Callable[..., Any], tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    result = run_seg("predict", str(image), "--method", "reco", "--classes", "cat,dog,Cat")
    assert result.exit_code == 2
    assert "'--classes'" in result.text
    assert "'Cat' is listed twice" in result.text


@pytest.mark.parametrize(
    ("given", "canonical"),
    [("ReCo+", "reco-plus"), ("reco_plus", "reco-plus"), ("MV-SimCon", "simcon"), (" MaskCLIP ", "maskclip")],
)
def test_methods_resolve_by_any_of_their_names(given: str, canonical: str) -> None:
    assert resolve_method(given).name == canonical


def test_method_names_are_the_eight_methods() -> None:
    expected = ("maskclip", "dense-clip", "groupvit", "reco", "reco-plus", "zutis", "reclip", "pgseg", "simcon")
    assert expected == METHOD_NAMES


def test_unknown_method_message_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown method 'gpt'; choose one of: maskclip, .*simcon\."):
        resolve_method("gpt")


def test_parsers() -> None:
    assert parse_concept_names(" cat, dog ,sky") == ("cat", "dog", "sky")
    with pytest.raises(ValueError, match="empty list"):
        parse_concept_names(" , ")
    assert parse_split_name("test-shifted") == "test-shifted"
    with pytest.raises(ValueError, match="not a split name"):
        parse_split_name("1train")
    assert parse_repo_id("my-org/maskclip.v1") == "my-org/maskclip.v1"
    for bad in ("org/", "a/b/c", "/name", "org/na me"):
        with pytest.raises(ValueError, match="namespace/name"):
            parse_repo_id(bad)
