"""Random streams of store mutations, as JSON, that run alike on a real store and on the model.

The kill -9 and concurrency suites log every operation a process runs as one JSON object (so it
can be written to a file before the call and replayed afterwards), run it on an `ImageStore`
and later replay it on `tests.model.ImageModel`. An operation is

    {"m": method, "a": [args], "k": {kwargs}}            one store call
    {"m": "batch", "ops": [operation, ...], "abort": b}   one `with store.batch():` block
    {"m": "compact"} / {"m": "garbage_collect"}           no state change

Bytes are written `{"$rb": [seed, size]}` (regenerated from the seed, so big items cost a few
bytes of log) and a manifest digest function `{"$dm": ["salt" | "fixed", text]}`.

Running one returns its outcome: "ok", or the name of the error it was refused with
(DuplicateID, DuplicateName, ImageUnknown: outcomes a racing writer legitimately gets, which
change nothing); a batch returns {"subs": [outcome, ...], "abort": bool}. Since the model is
deterministic, replaying the same operations on the same state gives the same outcomes: the
suites check that too.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from journalstore.errors import DuplicateID, DuplicateName, ImageUnknown

from ..model import ImageModel, dedupe, sha256_of

Op = dict[str, Any]
Outcome = Any  # "ok", an error class name, or {"subs": [...], "abort": bool}

REFUSALS = (DuplicateID, DuplicateName, ImageUnknown)

NAMES = [f"registry.example/app{i}:{tag}" for i in range(4) for tag in ("latest", "v1")] + ["ünï/cödé:1", "x"]
KEYS = ["manifest", "manifest-sha256:ab12", "config", "signature-1", "Key With Spaces/é"]
LAYERS = ["L1", "l1", "Layer-A", "layer-a", "LAYER-Ä"]
FLAG_KEYS = ["a", "b", "ü"]
FLAG_VALUES: list[Any] = [True, False, None, 0, -1, 2**40, 1.5, "s", "ünï", [1, "x"], {"k": [1, {"n": None}]}]
FIXED_DIGESTS = ["sha256:" + hashlib.sha256(f"fixed{i}".encode()).hexdigest() for i in range(3)]
MISSING_REF = "no-such-image"


# ----------------------------------------------------------------------------- encoding


def random_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


class ManifestDigest:
    """A `digest_manifest` function that can be logged: salted sha256, or a fixed digest (which
    makes several images share one by-digest entry)."""

    def __init__(self, kind: str, text: str) -> None:
        self.kind = kind
        self.text = text

    def __call__(self, data: bytes) -> str:
        if self.kind == "fixed":
            return self.text
        return "sha256:" + hashlib.sha256(self.text.encode() + data).hexdigest()


def decode(value: Any) -> Any:
    """The Python arguments a logged JSON value stands for."""
    if isinstance(value, dict):
        if "$rb" in value:
            seed, size = value["$rb"]
            return random_bytes(seed, size)
        if "$dm" in value:
            kind, text = value["$dm"]
            return ManifestDigest(kind, text)
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def custom_digest(op: Op) -> bool:
    """Whether a set_big_data operation gives its own manifest digest function."""
    return op["m"] == "set_big_data" and "digest_manifest" in op.get("k", {})


# ----------------------------------------------------------------------------- running


def run(target: Any, op: Op) -> Outcome:
    """Run one operation on a store or on the model; returns its outcome."""
    method = op["m"]
    if method == "batch":
        subs: list[Outcome] = []
        abort = bool(op.get("abort"))
        if isinstance(target, ImageModel):
            if abort:  # an aborted batch changes nothing; its sub-operations are not checked
                return {"subs": None, "abort": True}
            for sub in op["ops"]:
                subs.append(run(target, sub))
            return {"subs": subs, "abort": False}
        try:
            with target.batch():
                for sub in op["ops"]:
                    subs.append(run(target, sub))
                if abort:
                    raise _Abort
        except _Abort:
            return {"subs": None, "abort": True}
        return {"subs": subs, "abort": False}
    args = decode(op.get("a", []))
    kwargs = decode(op.get("k", {}))
    try:
        getattr(target, method)(*args, **kwargs)
    except REFUSALS as exc:
        return type(exc).__name__
    return "ok"


class _Abort(Exception):
    """Raised inside a batch to abandon it."""


def is_noop(op: Op) -> bool:
    """Operations that never change the state (the model has them as no-ops)."""
    return op["m"] in ("compact", "garbage_collect")


# ----------------------------------------------------------------------------- expected events


def expected_events(model: ImageModel, op: Op) -> list[dict[str, Any]]:
    """The events the store journals for `op` run on `model`'s state (before it is applied there).

    Refused operations journal nothing; an aborted batch journals nothing.
    """
    method = op["m"]
    if method == "batch":
        if op.get("abort"):
            return []
        shadow = model.copy()
        out: list[dict[str, Any]] = []
        for sub in op["ops"]:
            out.extend(expected_events(shadow, sub))
            run(shadow, sub)
        return out
    if is_noop(op):
        return []
    args = decode(op.get("a", []))
    kwargs = decode(op.get("k", {}))
    probe = model.copy()
    try:
        getattr(probe, method)(*args, **kwargs)
    except REFUSALS:
        return []
    if method == "create":
        return _create_events(args, kwargs)
    if method == "wipe":
        return [{"op": "delete", "id": image.id} for image in model.images]
    image = model.lookup(args[0])
    assert image is not None
    image_id = image.id
    if method in ("set_names", "add_names", "remove_names"):
        return [{"op": method.replace("_", "-"), "id": image_id, "names": list(args[1])}]
    if method == "delete":
        return [{"op": "delete", "id": image_id}]
    if method == "set_metadata":
        return [{"op": "set-metadata", "id": image_id, "metadata": args[1]}]
    if method == "set_flag":
        return [{"op": "set-flag", "id": image_id, "key": args[1], "value": args[2]}]
    if method == "clear_flag":
        return [{"op": "clear-flag", "id": image_id, "key": args[1]}]
    if method == "add_mapped_top_layer":
        return [{"op": "add-mapped-layer", "id": image_id, "layer": args[1]}]
    if method == "remove_mapped_top_layer":
        from ..model import go_equal_fold

        if not any(go_equal_fold(x, args[1]) for x in image.mapped_top_layers):
            return []
        return [{"op": "remove-mapped-layer", "id": image_id, "layer": args[1]}]
    if method == "set_big_data":
        key, data = args[1], args[2]
        fn: Callable[[bytes], str] | None = kwargs.get("digest_manifest")
        digest = fn(data) if fn is not None and key.startswith("manifest") else sha256_of(data)
        return [{"op": "set-big-data", "id": image_id, "key": key, "size": len(data), "digest": digest}]
    raise AssertionError(f"no expected events for {method}")


def _create_events(args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[dict[str, Any]]:
    image_id = args[0]
    names = list(args[1]) if len(args) > 1 else list(kwargs.get("names", ()))
    created = kwargs["created"]
    event: dict[str, Any] = {"op": "create", "id": image_id, "created": list(divmod(created, 1_000_000_000))}
    if names:
        event["names"] = dedupe(names)
    history = list(kwargs.get("names_history", ()))
    if history:
        event["history"] = history
    for field, key in (("layer", "layer"), ("digest", "digest"), ("metadata", "metadata"), ("flags", "flags")):
        if kwargs.get(key):
            event[field] = kwargs[key]
    out = [event]
    for item in kwargs.get("big_data", ()):
        key, data = item[0], item[1]
        digest = item[2] if len(item) == 3 and item[2] else sha256_of(data)
        out.append({"op": "set-big-data", "id": image_id, "key": key, "size": len(data), "digest": digest})
    return out


def plain(value: Any) -> Any:
    """Tuples as lists, mappings as dicts: the form events are compared in."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------- drawing


class Drawer:
    """Draws random operations from what a store holds now.

    `tag` makes the IDs of new images unique to this drawer (a process, a trial); `weights`
    overrides how often each kind is drawn.
    """

    WEIGHTS: Mapping[str, float] = {
        "create": 16,
        "create-duplicate": 1,
        "set_names": 5,
        "add_names": 8,
        "remove_names": 4,
        "delete": 6,
        "set_metadata": 4,
        "set_flag": 4,
        "clear_flag": 3,
        "set_big_data": 14,
        "add_mapped_top_layer": 3,
        "remove_mapped_top_layer": 3,
        "batch": 7,
        "compact": 5,
        "garbage_collect": 2,
        "wipe": 0.4,
    }

    def __init__(self, rng: random.Random, tag: str, weights: Mapping[str, float] | None = None) -> None:
        self.rng = rng
        self.tag = tag
        self.count = 0
        table = dict(self.WEIGHTS)
        table.update(weights or {})
        self.kinds = [k for k, w in table.items() if w > 0]
        self.weights = [table[k] for k in self.kinds]

    # -- pieces

    def new_id(self) -> str:
        self.count += 1
        return hashlib.sha256(f"{self.tag}-{self.count}".encode()).hexdigest()

    def data(self) -> dict[str, Any]:
        rng = self.rng
        roll = rng.random()
        if roll < 0.70:
            size = rng.randint(0, 300)
        elif roll < 0.96:
            size = rng.randint(1_000, 8_000)
        else:
            size = rng.randint(64_000, 200_000)
        return {"$rb": [rng.getrandbits(32), size]}

    def ref(self, images: Sequence[Any]) -> str:
        rng = self.rng
        if not images or rng.random() < 0.04:
            return MISSING_REF
        image = rng.choice(images)
        roll = rng.random()
        if roll < 0.15 and image.names:
            return str(rng.choice(image.names))
        if roll < 0.25:
            return str(image.id[:12])
        return str(image.id)

    def names(self, low: int, high: int) -> list[str]:
        picked = self.rng.sample(NAMES, self.rng.randint(low, high))
        if picked and self.rng.random() < 0.1:
            picked.append(picked[0])  # a duplicate in the argument
        return picked

    # -- operations

    def draw(self, images: Sequence[Any], *, in_batch: bool = False) -> Op:
        rng = self.rng
        while True:
            kind = rng.choices(self.kinds, self.weights)[0]
            if in_batch and kind in ("batch", "compact", "garbage_collect"):
                continue
            break
        if kind == "create":
            return self.create()
        if kind == "create-duplicate":
            op = self.create()
            if images:
                op["a"][0] = rng.choice(images).id
            return op
        if kind == "batch":
            ops = [self.draw(images, in_batch=True) for _ in range(rng.randint(2, 5))]
            if images and rng.random() < 0.25:  # delete an image and create it again, same ID
                victim = rng.choice(images)
                again = self.create()
                again["a"][0] = victim.id
                ops.insert(0, {"m": "delete", "a": [victim.id]})
                ops.insert(rng.randint(1, len(ops)), again)
            return {"m": "batch", "ops": ops, "abort": rng.random() < 0.2}
        if kind in ("compact", "garbage_collect", "wipe"):
            return {"m": kind}
        ref = self.ref(images)
        if kind in ("set_names", "add_names", "remove_names"):
            return {"m": kind, "a": [ref, self.names(0 if kind == "set_names" else 1, 3)]}
        if kind == "delete":
            return {"m": kind, "a": [ref]}
        if kind == "set_metadata":
            return {"m": kind, "a": [ref, rng.choice(["", "meta", '{"json": true}', "ü" * rng.randint(1, 50)])]}
        if kind == "set_flag":
            return {"m": kind, "a": [ref, rng.choice(FLAG_KEYS), rng.choice(FLAG_VALUES)]}
        if kind == "clear_flag":
            return {"m": kind, "a": [ref, rng.choice(FLAG_KEYS)]}
        if kind in ("add_mapped_top_layer", "remove_mapped_top_layer"):
            return {"m": kind, "a": [ref, rng.choice(LAYERS)]}
        if kind == "set_big_data":
            key = rng.choice(KEYS)
            op = {"m": kind, "a": [ref, key, self.data()]}
            if key.startswith("manifest") and rng.random() < 0.4:
                op["k"] = {
                    "digest_manifest": {
                        "$dm": ["fixed", rng.choice(FIXED_DIGESTS)] if rng.random() < 0.5 else ["salt", "s1"]
                    }
                }
            return op
        raise AssertionError(kind)

    def create(self) -> Op:
        rng = self.rng
        kwargs: dict[str, Any] = {"created": rng.randint(0, 2**62)}
        if rng.random() < 0.3:
            kwargs["layer"] = rng.choice(LAYERS)
        if rng.random() < 0.15:
            kwargs["digest"] = rng.choice(FIXED_DIGESTS)
        if rng.random() < 0.2:
            kwargs["metadata"] = "created"
        if rng.random() < 0.15:
            kwargs["names_history"] = self.rng.sample(NAMES, 2)
        if rng.random() < 0.2:
            kwargs["flags"] = {rng.choice(FLAG_KEYS): rng.choice(FLAG_VALUES)}
        if rng.random() < 0.45:
            items = []
            for key in rng.sample(KEYS, rng.randint(1, 3)):
                item: list[Any] = [key, self.data()]
                if rng.random() < 0.15:
                    item.append(rng.choice(FIXED_DIGESTS))
                items.append(item)
            kwargs["big_data"] = items
        return {"m": "create", "a": [self.new_id(), self.names(0, 2)], "k": kwargs}
