"""The model itself, held to what the Go store returned for the golden fixture (expected.json),
and the library held to the model on that fixture: the oracle is checked before it judges."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from journalstore import ImageStore
from journalstore.errors import StoreError

from .conftest import FIXTURE
from .model import ImageModel, canonical, diff_snapshots, go_time_text, parse_go_time, snapshot_of_store


@pytest.fixture
def fixture_docs() -> list[dict[str, Any]]:
    if not FIXTURE.exists():
        pytest.skip(f"golden fixture not found at {FIXTURE}")
    docs: list[dict[str, Any]] = json.loads((FIXTURE / "store" / "images.json").read_text())
    return docs


@pytest.fixture
def expected() -> dict[str, Any]:
    if not FIXTURE.exists():
        pytest.skip(f"golden fixture not found at {FIXTURE}")
    data: dict[str, Any] = json.loads((FIXTURE / "expected.json").read_text())
    return data


def test_model_loads_the_fixture_as_go_did(fixture_docs: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    model = ImageModel.from_images_json(fixture_docs)
    assert model.ids() == [e["id"] for e in expected["images"]]
    for image, want in zip(model.images, expected["images"], strict=True):
        assert image.digest == want["digest"]
        assert image.digests == want["digests"]
        assert image.names == want["names"]
        assert image.names_history == want["names_history"]
        assert image.top_layer == want["top_layer"]
        assert image.mapped_top_layers == want["mapped_top_layers"]
        assert image.metadata == want["metadata"]
        assert image.big_data_names == want["big_data_names"]
        assert image.big_data_sizes == want["big_data_sizes"]
        assert image.big_data_digests == want["big_data_digests"]
        assert go_time_text(image.created_ns, image.created_offset) == want["created"]
        assert (image.created_ns, image.created_offset) == (want["created_unix_nano"], want["created_utc_offset_s"])
        assert canonical(image.flags) == canonical(want["flags"])
    assert {d: model.by_digest(d) for d in expected["by_digest"]} == expected["by_digest"]
    for gone in expected["deleted_image_ids"]:
        assert model.lookup(gone) is None


def test_model_writes_the_fixture_records_back_unchanged(fixture_docs: list[dict[str, Any]]) -> None:
    model = ImageModel.from_images_json(fixture_docs)
    assert [image.to_json() for image in model.images] == fixture_docs


@pytest.mark.parametrize(
    "text",
    [
        "2024-03-15T10:20:30.123456789+02:00",
        "2023-01-02T03:04:05.12Z",
        "2022-05-06T07:08:09-05:00",
        "2021-12-31T23:59:59.000000001Z",
        "0001-01-01T00:00:00Z",
    ],
)
def test_model_time_text_round_trips(text: str) -> None:
    assert go_time_text(*parse_go_time(text)) == text


@pytest.mark.parametrize("read_only", [True, False])
def test_library_agrees_with_the_model_on_the_fixture(
    fixture_copy: Path, fixture_docs: list[dict[str, Any]], read_only: bool
) -> None:
    model = ImageModel.from_images_json(fixture_docs)
    store = ImageStore(fixture_copy, read_only=read_only, fsync="never")
    try:
        expected, actual = model.snapshot(), snapshot_of_store(store)
        assert expected == actual, diff_snapshots(expected, actual)
        for image in model.images:
            for key in image.big_data_names:
                # the sizes recorded in images.json are those of the files Go wrote
                assert len(store.big_data(image.id, key)) == image.big_data_sizes[key]
    finally:
        store.close()


def test_model_names_examples_of_spec() -> None:
    model = ImageModel()
    model.create("i", names=["1", "2", "3", "4"], names_history=["4", "3", "2", "1"], created=0)
    model.add_names("i", ["5"])
    assert model.get("i").names == ["5", "1", "2", "3", "4"]
    assert model.get("i").names_history == ["4", "3", "2", "1", "5"]
    model = ImageModel()
    model.create("i", names=["1", "2", "3"], names_history=["3", "2", "1"], created=0)
    model.remove_names("i", ["2"])
    assert model.get("i").names_history == ["3", "1", "2"]


def test_model_rejected_calls_change_nothing() -> None:
    model = ImageModel()
    model.create("a" * 64, names=["x"], created=0, big_data=[("manifest", b"m")])
    before = model.snapshot()
    for call in (
        lambda: model.create("a" * 64),
        lambda: model.create("b" * 64, names=["y", "x"]),
        lambda: model.create("b" * 64, big_data=[("k", b"v"), ("", b"w")]),
        lambda: model.set_flag("x", "f", float("nan")),
        lambda: model.set_big_data("x", "manifest", b"n", lambda d: "bad"),
        lambda: model.add_names("nope", ["z"]),
    ):
        with pytest.raises((StoreError, TypeError)):
            call()
        assert model.snapshot() == before
