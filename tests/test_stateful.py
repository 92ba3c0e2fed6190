"""A hypothesis state machine: random operations on a real ImageStore and on the model.

After every step the two must agree on everything a reader can see: every field of every image
(via to_json, plus the derived digests), the order of images(), by_digest for every digest,
lookups by every name, ID and ID prefix, the big-data bytes (through the API and on disk), and
which image directories exist. A reader that follows the journal, and a read-only store opened
fresh on the directory, must agree too.

Budget: the "journalstore" hypothesis profile keeps the run well under a minute on 2 cores;
JOURNALSTORE_STRESS=1 selects "journalstore-stress", which runs far more and longer examples.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from journalstore import ImageStore
from journalstore.errors import InvalidFlagValue, InvalidName, StoreError

from .helpers import lookup_id, tree_bytes
from .model import (
    ImageModel,
    big_data_file_name,
    canonical_image,
    diff_snapshots,
    snapshot_of_store,
)

settings.register_profile(
    "journalstore",
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile(
    "journalstore-stress",
    max_examples=400,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
# For hunting bugs: many examples, no shrinking (a failing run prints its unshrunk steps at once).
settings.register_profile(
    "journalstore-noshrink", parent=settings.get_profile("journalstore-stress"), phases=[Phase.generate]
)
PROFILE = os.environ.get(
    "JOURNALSTORE_HYPOTHESIS_PROFILE",
    "journalstore-stress" if os.environ.get("JOURNALSTORE_STRESS") == "1" else "journalstore",
)


def _hex(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# IDs with shared prefixes ("abc" is itself an ID and a prefix of two others), a non-hex one,
# and names that collide with IDs and prefixes, so precedence and ambiguity come up often.
IDS = ["abc0" + _hex("0")[4:], "abc1" + _hex("1")[4:], "abd0" + _hex("2")[4:], _hex("3"), "abc", "img-Z", "ïd é"]
NAMES = ["n0", "n1", "n2", "n3", "repo/x:1", "abd", IDS[3], "abc1", "名前:1", "with space"]
STATIC_REFS = [*IDS, *NAMES, "ab", "abc0", "abd0", IDS[3][:8], "zz", "", "N0", "img"]
DATA = [b"", b"m0", b"m1", b"\x00\xffbin"]
DIGESTS = [_sha(b"d0"), _sha(b"d1"), "sha512:" + hashlib.sha512(b"d2").hexdigest(), _sha(b"m0")]
KEYS = [
    "manifest",
    "manifest-2",
    "manifestZ",
    "config",
    "sha256:abc",
    "Some Key/odd",
    "sig.v1",
    "..",
    "MANIFEST",
    "é/k",
]
LAYERS = ["L1", "l1", "Lx", "lX", "ab", "Élan"]
FLAG_KEYS = ["f0", "f1", "weird key é", ""]
DIGEST_UNIVERSE = [*DIGESTS, *(_sha(d) for d in DATA)]

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6)
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_values = st.recursive(
    json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=6
)
# Creation times stay inside what int64 nanoseconds hold (1678..2261): times outside it are a
# known library bug, tested on its own in test_spec_ops.py (test_created_outside_int64_ns...).
created_values = st.one_of(
    st.integers(-(2**63) + 1, 2**63 - 1),
    st.datetimes(
        min_value=datetime(1678, 1, 2),
        max_value=datetime(2261, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(0)), timezone(timedelta(hours=2)), timezone(-timedelta(hours=5, minutes=30))]
        ),
    ),
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1)),  # naive: UTC
)


class FixedDigest:
    """A digest_manifest callback that returns one fixed digest (same object for store and model)."""

    def __init__(self, digest: str) -> None:
        self.digest = digest

    def __call__(self, data: bytes) -> str:
        return self.digest

    def __repr__(self) -> str:
        return f"FixedDigest({self.digest!r})"


def same_error(expected: BaseException, actual: BaseException) -> bool:
    """Whether the store's exception is the one the contract asks for where the model raised."""
    if isinstance(expected, InvalidName | InvalidFlagValue):  # SPEC: "a ValueError subclass of StoreError"
        return isinstance(actual, StoreError) and isinstance(actual, ValueError)
    return isinstance(actual, type(expected))


class _Abort(Exception):
    pass


Op = tuple[str, tuple[Any, ...], dict[str, Any]]


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="jstore-stateful-")
        self.path = Path(self.tmp) / "store"
        self.model = ImageModel()
        self.orphans: set[str] = set()
        # Two read-write instances on the directory (the active one takes the writes, the other
        # catches up before its own), and a read-only reader that follows the journal.
        self.writers: list[ImageStore] = []
        self.active = 0
        self.reader: ImageStore | None = None
        self.compact_every: list[int | None] = []

    @initialize(compact_every=st.lists(st.sampled_from([None, None, 3, 11]), min_size=2, max_size=2))
    def open_store(self, compact_every: list[int | None]) -> None:
        self.compact_every = compact_every
        self.writers = [ImageStore(self.path, fsync="never", compact_every=c) for c in compact_every]
        self.reader = ImageStore(self.path, read_only=True)

    def teardown(self) -> None:
        for s in [*self.writers, self.reader]:
            if s is not None:
                s.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @property
    def s(self) -> ImageStore:
        return self.writers[self.active]

    def settle(self) -> None:
        """Let automatic compactions (background threads) finish before files are compared."""
        for writer in self.writers:
            writer.wait_for_compaction()

    @rule(index=st.integers(0, 1))
    def switch_writer(self, index: int) -> None:
        self.active = index

    # ------------------------------------------------------------------ drawing operations

    def draw_ref(self, data: st.DataObject, model: ImageModel) -> str:
        choices: list[st.SearchStrategy[str]] = [st.sampled_from(STATIC_REFS)]
        ids = model.ids()
        names = [n for image in model.images for n in image.names]
        if ids:
            choices.append(st.sampled_from(ids))
            choices.append(st.sampled_from(ids))
            choices.append(st.builds(lambda i, n: i[:n], st.sampled_from(ids), st.integers(1, 12)))
        if names:
            choices.append(st.sampled_from(names))
        return data.draw(st.one_of(choices), label="ref")

    def draw_op(self, data: st.DataObject, model: ImageModel) -> Op:
        kind = data.draw(
            st.sampled_from(
                [
                    "create",
                    "create",
                    "set_names",
                    "add_names",
                    "remove_names",
                    "delete",
                    "set_metadata",
                    "set_flag",
                    "clear_flag",
                    "set_big_data",
                    "set_big_data",
                    "add_mapped_top_layer",
                    "remove_mapped_top_layer",
                ]
            ),
            label="op",
        )
        if kind == "create":
            image_id = data.draw(st.sampled_from([*IDS, None]), label="id")
            kwargs: dict[str, Any] = {
                "digest": data.draw(st.sampled_from(["", "", *DIGESTS]), label="digest"),
                "metadata": data.draw(text, label="metadata"),
                "created": data.draw(created_values, label="created"),
                "names_history": data.draw(
                    st.lists(st.sampled_from([*NAMES, "old1", "old2"]), unique=True, max_size=3), label="history"
                ),
                "flags": data.draw(st.none() | st.dictionaries(st.sampled_from(FLAG_KEYS), json_values, max_size=2)),
                "big_data": data.draw(
                    st.lists(
                        st.tuples(st.sampled_from(KEYS), st.sampled_from(DATA))
                        | st.tuples(st.sampled_from(KEYS), st.sampled_from(DATA), st.sampled_from(DIGESTS)),
                        max_size=3,
                    ),
                    label="big_data",
                ),
            }
            if data.draw(st.booleans()):
                kwargs["digests"] = data.draw(st.lists(st.sampled_from(DIGESTS), max_size=3))
            names = data.draw(st.lists(st.sampled_from(NAMES), max_size=3), label="names")
            layer = data.draw(st.sampled_from(["", *LAYERS]), label="layer")
            return ("create", (image_id, names, layer), kwargs)
        ref = self.draw_ref(data, model)
        if kind in ("set_names", "add_names", "remove_names"):
            return (kind, (ref, data.draw(st.lists(st.sampled_from(NAMES), max_size=3), label="names")), {})
        if kind == "delete":
            return (kind, (ref,), {})
        if kind == "set_metadata":
            return (kind, (ref, data.draw(text, label="metadata")), {})
        if kind == "set_flag":
            return (kind, (ref, data.draw(st.sampled_from(FLAG_KEYS)), data.draw(json_values, label="value")), {})
        if kind == "clear_flag":
            return (kind, (ref, data.draw(st.sampled_from(FLAG_KEYS))), {})
        if kind == "set_big_data":
            key = data.draw(st.sampled_from(KEYS), label="key")
            payload = data.draw(st.sampled_from(DATA), label="data")
            callback = data.draw(st.none() | st.sampled_from(DIGESTS).map(FixedDigest), label="digest_manifest")
            return (kind, (ref, key, payload, callback), {})
        layer = data.draw(st.sampled_from(LAYERS), label="layer")
        return (kind, (ref, layer), {})

    # ------------------------------------------------------------------ running operations

    def do(self, model: ImageModel, op: Op) -> None:
        """Run one operation on the model and the store; they must succeed or fail alike."""
        name, args, kwargs = op
        if name == "create" and args[0] is None:
            self._do_generated_create(model, args, kwargs)
            return
        model_error: BaseException | None = None
        try:
            getattr(model, name)(*args, **kwargs)
        except (StoreError, TypeError, ValueError) as exc:
            model_error = exc
        try:
            result = getattr(self.s, name)(*args, **kwargs)
        except Exception as exc:
            assert model_error is not None, f"{name}{args}{kwargs}: the store raised {exc!r}, the model did not"
            assert same_error(model_error, exc), f"{name}{args}: model raised {model_error!r}, store {exc!r}"
            return
        assert model_error is None, f"{name}{args}{kwargs}: the model raised {model_error!r}, the store did not"
        if name == "create":
            self._check_created(model, result)
            self.orphans.discard(result.id)

    def _do_generated_create(self, model: ImageModel, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            result = self.s.create(*args, **kwargs)
        except Exception as exc:
            probe = model.copy()
            try:
                probe.create(*args, **kwargs)
            except (StoreError, TypeError, ValueError) as model_error:
                assert same_error(model_error, exc), f"create: model raised {model_error!r}, store {exc!r}"
                return
            raise AssertionError(f"create{args}{kwargs}: the store raised {exc!r}, the model did not") from exc
        image_id = result.id
        assert len(image_id) == 64 and set(image_id) <= set("0123456789abcdef") and not image_id[:12].isdigit()
        model.create(image_id, *args[1:], **kwargs)
        self._check_created(model, result)

    @staticmethod
    def _check_created(model: ImageModel, result: Any) -> None:
        image = model.get(result.id)
        assert canonical_image(result.to_json(), result.digests) == canonical_image(image.to_json(), image.digests)
        assert result.read_only is False

    # ------------------------------------------------------------------ rules

    @rule(data=st.data())
    def operation(self, data: st.DataObject) -> None:
        self.do(self.model, self.draw_op(data, self.model))

    @rule(data=st.data())
    def another_operation(self, data: st.DataObject) -> None:
        self.do(self.model, self.draw_op(data, self.model))

    @rule(data=st.data())
    def steal_names(self, data: st.DataObject) -> None:
        """Names held by one image given to another, so that they move."""
        holders = [image for image in self.model.images if image.names]
        if not holders or len(self.model.images) < 2:
            return
        loser = data.draw(st.sampled_from(holders))
        winner = data.draw(st.sampled_from([i for i in self.model.images if i.id != loser.id]))
        taken = data.draw(st.lists(st.sampled_from(loser.names), min_size=1, max_size=2))
        op = data.draw(st.sampled_from(["set_names", "add_names"]))
        self.do(self.model, (op, (winner.id, taken), {}))

    @rule(data=st.data())
    def mapped_layer_case_variants(self, data: st.DataObject) -> None:
        if not self.model.images:
            return
        image = data.draw(st.sampled_from(self.model.images))
        layer = data.draw(st.sampled_from(LAYERS))
        for _ in range(data.draw(st.integers(1, 2))):
            self.do(self.model, ("add_mapped_top_layer", (image.id, layer), {}))
        variant = data.draw(st.sampled_from([layer, layer.upper(), layer.lower(), layer.swapcase(), "absent"]))
        self.do(self.model, ("remove_mapped_top_layer", (image.id, variant), {}))

    @rule(data=st.data())
    def batch(self, data: st.DataObject) -> None:
        abort = data.draw(st.booleans(), label="abort")
        shadow = self.model.copy()
        assert self.reader is not None
        self.reader.refresh()
        self.settle()
        files = tree_bytes(self.path)
        before = self.model.snapshot()
        orphans = set(self.orphans)
        try:
            with self.s.batch():
                for _ in range(data.draw(st.integers(1, 5), label="batch size")):
                    self.do(shadow, self.draw_op(data, shadow))
                # reads of this instance see the pending writes; others see nothing yet
                self.check_store(self.s, shadow)
                assert self.reader.refresh() is False
                seen = snapshot_of_store(self.reader, [*DIGEST_UNIVERSE, *self.model.by_digest_lists])
                assert seen == before
                other = self.writers[1 - self.active]
                seen = snapshot_of_store(other, [*DIGEST_UNIVERSE, *self.model.by_digest_lists])
                assert seen == before, "the other writer saw the batch"
                if abort:
                    raise _Abort
        except _Abort:
            pass
        if abort:
            assert tree_bytes(self.path) == files, "an aborted batch changed files"
            self.orphans = orphans
        else:
            self.model = shadow

    @rule(data=st.data())
    def wipe(self, data: st.DataObject) -> None:
        if data.draw(st.integers(0, 4)) == 0:
            self.do(self.model, ("wipe", (), {}))

    @rule()
    def compact(self) -> None:
        self.s.compact()

    @rule()
    def reopen(self) -> None:
        self.s.close()
        self.writers[self.active] = ImageStore(self.path, fsync="never", compact_every=self.compact_every[self.active])

    @rule(data=st.data())
    def make_orphan_directory(self, data: st.DataObject) -> None:
        """A directory a crash would leave: named by an ID (from the pool) that no image has."""
        free = [i for i in IDS if self.model.lookup(i) is None or self.model.lookup(i).id != i]  # type: ignore[union-attr]
        free = [i for i in free if not (self.path / i).exists()]
        if not free:
            return
        orphan = data.draw(st.sampled_from(free))
        (self.path / orphan).mkdir()
        (self.path / orphan / "manifest").write_bytes(b"left over")
        self.orphans.add(orphan)

    @rule()
    def garbage_collect(self) -> None:
        self.s.garbage_collect()
        for orphan in self.orphans:
            if len(orphan) == 64:  # only 64-hex names are image directories to collect
                assert not (self.path / orphan).exists(), f"garbage_collect left {orphan}"
        self.orphans = {o for o in self.orphans if (self.path / o).exists()}

    @rule(data=st.data())
    def invalid_call(self, data: st.DataObject) -> None:
        """A call with exactly one bad argument: the documented error, and nothing changes."""
        existing = [i.id for i in self.model.images]
        ref = data.draw(st.sampled_from(existing)) if existing else "zz"
        fresh = next((i for i in IDS if self.model.lookup(i) is None), _hex("fresh"))
        bad_value = data.draw(
            st.sampled_from([float("nan"), float("inf"), {1: 2}, {"a": {3}}, b"x", object(), 2**64, -(2**63) - 1])
        )
        op: Op = data.draw(
            st.sampled_from(
                [
                    ("create", ("",), {}),
                    ("create", ("a/b",), {}),
                    ("create", ("..",), {}),
                    ("create", ("x" * 256,), {}),
                    ("create", ("\ud800",), {}),
                    ("create", ("images.json",), {}),
                    ("create", ("journal",), {}),
                    ("create", (fresh, [1]), {}),
                    ("create", (fresh,), {"digest": "sha256:xyz"}),
                    ("create", (fresh,), {"flags": {"f": bad_value}}),
                    ("create", (fresh,), {"big_data": [("k", b"x"), ("", b"y")]}),
                    ("create", (fresh,), {"big_data": [("k", 5)]}),
                    ("create", (fresh,), {"big_data": [("manifest", b"x", "sha256:1")]}),
                    ("set_flag", (ref, "f", bad_value), {}),
                    ("set_big_data", (ref, "", b"x"), {}),
                    ("set_big_data", (ref, "k" * 256, b"x"), {}),
                    ("set_big_data", (ref, "k", 5), {}),
                    ("set_big_data", (ref, "manifest", b"x", FixedDigest("sha256:short")), {}),
                    ("add_names", (ref, [None]), {}),
                    ("set_names", (ref, ["ok", "\udcff"]), {}),
                ]
            )
        )
        self.settle()
        files = tree_bytes(self.path)
        position = self.s.position
        before = self.model.snapshot()
        name, args, kwargs = op
        try:
            getattr(self.model, name)(*args, **kwargs)
        except (StoreError, TypeError) as exc:
            expected: BaseException = exc
        else:
            raise AssertionError(f"the model accepted {op}")
        assert self.model.snapshot() == before
        try:
            getattr(self.s, name)(*args, **kwargs)
        except Exception as exc:
            assert same_error(expected, exc), f"{name}{args}: expected {expected!r}, store raised {exc!r}"
        else:
            raise AssertionError(f"the store accepted {op}")
        assert self.s.position == position
        assert tree_bytes(self.path) == files

    # ------------------------------------------------------------------ checks

    def check_store(self, store: ImageStore, model: ImageModel) -> None:
        expected = model.snapshot()
        actual = snapshot_of_store(store, [*DIGEST_UNIVERSE, *model.by_digest_lists])
        assert expected == actual, diff_snapshots(expected, actual)
        refs = set(STATIC_REFS)
        for image in model.images:
            refs.update(image.names)
            refs.update(image.id[:n] for n in (1, 2, 3, 4, 5, 12, len(image.id)))
        for ref in sorted(refs):
            found = model.lookup(ref)
            assert lookup_id(store, ref) == (None if found is None else found.id), f"lookup of {ref!r}"
            assert store.exists(ref) is (found is not None)
        for image in model.images:
            assert store.big_data_names(image.id) == image.big_data_names
            assert store.metadata(image.id) == image.metadata
            for key in image.big_data_names:
                assert store.big_data(image.id, key) == model.data[(image.id, key)], f"big data {key!r}"
                assert store.big_data_size(image.id, key) == image.big_data_sizes[key]
                assert store.big_data_digest(image.id, key) == image.big_data_digests[key]

    @invariant()
    def store_agrees_with_model(self) -> None:
        for writer in self.writers:
            self.check_store(writer, self.model)

    @invariant()
    def directories_match(self) -> None:
        if not self.writers:
            return
        for image in self.model.images:
            directory = self.path / image.id
            wanted = {big_data_file_name(k) for k in image.big_data_names}
            if wanted or directory.exists():
                assert set(os.listdir(directory)) == wanted, f"files of {image.id}"
                for key in image.big_data_names:
                    assert (directory / big_data_file_name(key)).read_bytes() == self.model.data[(image.id, key)]
        for image_id in IDS:
            if self.model.lookup(image_id) is None and image_id not in self.orphans:
                assert not (self.path / image_id).exists(), f"directory of deleted image {image_id} is still there"

    @invariant()
    def readers_agree(self) -> None:
        if not self.writers or self.reader is None:
            return
        self.reader.refresh()
        expected = self.model.snapshot()
        following = snapshot_of_store(self.reader, [*DIGEST_UNIVERSE, *self.model.by_digest_lists])
        assert expected == following, "following reader:\n" + diff_snapshots(expected, following)
        with ImageStore(self.path, read_only=True) as fresh:
            self.check_store(fresh, self.model)
            assert all(image.read_only for image in fresh.images())


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings.get_profile(PROFILE)
