"""The image commands, with the names, arguments and plain output of containers-storage."""

from __future__ import annotations

import argparse
import sys

from ..errors import StoreError, StoreIsReadOnly
from ..record import Image
from ..validation import check_digest
from .framework import (
    EXIT_ERROR,
    EXIT_OK,
    PROG,
    Session,
    command,
    detail_lines,
    image_document,
    isatty,
    names_option,
    quiet_option,
    read_file,
    read_text_file,
    ref_argument,
    refs_argument,
)

# ============================================================================ image commands


def _create_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--id", metavar="ID", default=None, help="image ID (default: a random one)")
    names_option(p, required=False, what="image name")
    p.add_argument("-d", "--digest", metavar="DIGEST", default="", help="image digest (algorithm:hex)")
    meta = p.add_mutually_exclusive_group()
    meta.add_argument("-m", "--metadata", metavar="METADATA", default=None, help="metadata text")
    meta.add_argument("-f", "--metadata-file", metavar="FILE", default=None, help="read the metadata from FILE")
    p.add_argument("layer", metavar="LAYER", nargs="?", default="", help="top layer ID (free-form)")


@command(
    "create-image",
    aliases=("createimage",),
    access="write",
    args=_create_args,
    summary="Create a new image",
    example='journalstore create-image -n quay.io/podman/hello:latest -m \'{"source": "pull"}\' L1',
    description="Prints the new image's ID, then its names, one per line, indented.",
)
def cmd_create_image(s: Session, a: argparse.Namespace) -> int:
    metadata = a.metadata or ""
    if a.metadata_file is not None:
        metadata = read_text_file(a.metadata_file, "metadata file")
    image = s.store.create(id=a.id, names=a.names or (), layer=a.layer, digest=a.digest, metadata=metadata)
    if s.json:
        s.emit(image_document(image))
    else:
        s.line(image.id)
        for name in image.names:
            s.line(f"\t{name}")
    return EXIT_OK


@command(
    "images",
    access="read",
    args=quiet_option,
    summary="List images",
    example="journalstore images -q",
    description="Prints each image's ID, then its names, digests and data keys, indented.",
)
def cmd_images(s: Session, a: argparse.Namespace) -> int:
    s.list_images(s.store.images(), quiet=a.quiet)
    return EXIT_OK


def _by_digest_args(p: argparse.ArgumentParser) -> None:
    quiet_option(p)
    p.add_argument("digest", metavar="DIGEST", help="a digest, algorithm:hex")


@command(
    "images-by-digest",
    access="read",
    args=_by_digest_args,
    summary="List images by digest",
    example="journalstore images-by-digest sha256:0123...cdef",
    description="Images whose digest, or the digest of one of their manifests, is DIGEST; same output as images.",
)
def cmd_images_by_digest(s: Session, a: argparse.Namespace) -> int:
    s.list_images(s.store.by_digest(check_digest(a.digest)), quiet=a.quiet)
    return EXIT_OK


@command(
    "image",
    access="read",
    args=refs_argument,
    summary="Examine an image",
    example="journalstore image quay.io/podman/hello:latest",
    description="Prints ID, Name, Top Layer, Digest and Data lines (as containers-storage does), then Created, "
    "Name History and Flag lines. An unknown REF is reported on stderr and makes the exit status 1.",
)
def cmd_image(s: Session, a: argparse.Namespace) -> int:
    found: list[Image] = []
    missing: list[str] = []
    for ref in a.refs:
        try:
            found.append(s.store.get(ref))
        except KeyError as exc:
            missing.append(str(exc))
    if s.json:
        s.emit([image_document(image) for image in found])
    else:
        for image in found:
            s.lines(detail_lines(image, show_read_only=s.read_only_requested))
    for message in missing:
        s.error(message)
    return EXIT_ERROR if missing else EXIT_OK


def _exists_args(p: argparse.ArgumentParser) -> None:
    quiet_option(p, "print nothing; only set the exit status")
    refs_argument(p)


@command(
    "exists",
    access="read",
    args=_exists_args,
    summary="Check if an image exists",
    example="journalstore exists -q quay.io/podman/hello:latest && echo present",
    description="Prints 'REF: true' or 'REF: false' for each REF; exit status 1 if any is missing "
    "(not an error: nothing is printed on stderr).",
)
def cmd_exists(s: Session, a: argparse.Namespace) -> int:
    result = {ref: s.store.exists(ref) for ref in a.refs}
    if s.json:
        s.emit(result)
    elif not a.quiet:
        for ref, present in result.items():
            s.line(f"{ref}: {'true' if present else 'false'}")
    return EXIT_OK if all(result.values()) else EXIT_ERROR


def _delete_args(p: argparse.ArgumentParser) -> None:
    refs_argument(p)


@command(
    "delete-image",
    aliases=("deleteimage",),
    access="write",
    args=_delete_args,
    summary="Delete images",
    example="journalstore delete-image quay.io/podman/hello:latest",
    description="Deletes each REF (its record and its data directory). Prints nothing on success; each "
    "failure is one line on stderr, and makes the exit status 1. --json prints {REF: {id, error}}.",
)
def cmd_delete_image(s: Session, a: argparse.Namespace) -> int:
    result: dict[str, dict[str, str]] = {}
    failed = False
    for ref in a.refs:
        try:
            image = s.store.get(ref)
            s.store.delete(image.id)
            result[ref] = {"id": image.id, "error": ""}
        except StoreError as exc:
            if isinstance(exc, StoreIsReadOnly):
                raise
            failed = True
            result[ref] = {"id": "", "error": str(exc)}
            s.error(str(exc))
    if s.json:
        s.emit(result)
    return EXIT_ERROR if failed else EXIT_OK


def _emit_names(s: Session, ref: str) -> None:
    if s.json:
        s.emit(list(s.store.get(ref).names))


@command(
    "get-names",
    aliases=("getnames",),
    access="read",
    args=ref_argument,
    summary="Get an image's names",
    example="journalstore get-names 3a57aedd",
    description="Prints the image's names, one per line.",
)
def cmd_get_names(s: Session, a: argparse.Namespace) -> int:
    names = s.store.get(a.ref).names
    if s.json:
        s.emit(list(names))
    else:
        for name in names:
            s.line(name)
    return EXIT_OK


def _names_command(
    name: str, alias: str, what: str, required: bool, summary: str, example: str, description: str
) -> None:
    """Register one of add-names, remove-names, set-names: they differ only in the store method."""
    method = name.replace("-", "_")

    def configure(p: argparse.ArgumentParser) -> None:
        names_option(p, required=required, what=what)
        ref_argument(p)

    def handler(s: Session, a: argparse.Namespace) -> int:
        image = s.store.get(a.ref)
        getattr(s.store, method)(image.id, a.names or ())
        _emit_names(s, image.id)
        return EXIT_OK

    handler.__name__ = handler.__qualname__ = f"cmd_{method}"
    command(
        name,
        aliases=(alias,),
        access="write",
        args=configure,
        summary=summary,
        example=example,
        description=description + " Prints nothing (--json: the image's names).",
    )(handler)


_names_command(
    "add-names",
    "addnames",
    "name to add",
    True,
    "Add names to an image",
    "journalstore add-names -n quay.io/podman/hello:v1 -n hello:latest 3a57aedd",
    "New names go first; a name another image holds moves to this one.",
)
_names_command(
    "remove-names",
    "removenames",
    "name to remove",
    True,
    "Remove names from an image",
    "journalstore remove-names -n hello:latest 3a57aedd",
    "The image keeps its other names.",
)
_names_command(
    "set-names",
    "setnames",
    "new name; none at all removes every name",
    False,
    "Set an image's names",
    "journalstore set-names -n registry.example/team/app:1.0 3a57aedd",
    "The given names replace the old ones; a name another image holds moves to this one.",
)


def _metadata_args(p: argparse.ArgumentParser) -> None:
    quiet_option(p, "print only the metadata, without 'REF: '")
    refs_argument(p)


@command(
    "metadata",
    access="read",
    args=_metadata_args,
    summary="Retrieve an image's metadata",
    example="journalstore metadata -q 3a57aedd",
    description="Prints 'REF: METADATA' (a trailing newline of the metadata trimmed). --json prints {REF: METADATA}.",
)
def cmd_metadata(s: Session, a: argparse.Namespace) -> int:
    found: dict[str, str] = {}
    missing: list[str] = []
    for ref in a.refs:
        try:
            found[ref] = s.store.metadata(ref).removesuffix("\n")
        except KeyError as exc:
            missing.append(str(exc))
    if s.json:
        s.emit(found)
    else:
        for ref, text in found.items():
            s.line(text if a.quiet else f"{ref}: {text}")
    for message in missing:
        s.error(message)
    return EXIT_ERROR if missing else EXIT_OK


def _set_metadata_args(p: argparse.ArgumentParser) -> None:
    meta = p.add_mutually_exclusive_group(required=True)
    meta.add_argument("-m", "--metadata", metavar="TEXT", default=None, help="the new metadata")
    meta.add_argument("-f", "--metadata-file", metavar="FILE", default=None, help="read the new metadata from FILE")
    ref_argument(p)


@command(
    "set-metadata",
    aliases=("setmetadata",),
    access="write",
    args=_set_metadata_args,
    summary="Set an image's metadata",
    example='journalstore set-metadata -m \'{"note": "pinned"}\' 3a57aedd',
    description="Prints nothing (--json: the image).",
)
def cmd_set_metadata(s: Session, a: argparse.Namespace) -> int:
    text = a.metadata if a.metadata is not None else read_text_file(a.metadata_file, "metadata file")
    image = s.store.get(a.ref)
    s.store.set_metadata(image.id, text)
    if s.json:
        s.emit(image_document(s.store.get(image.id)))
    return EXIT_OK


@command(
    "list-image-data",
    aliases=("listimagedata",),
    access="read",
    args=ref_argument,
    summary="List the data items attached to an image",
    example="journalstore list-image-data 3a57aedd",
    description="Prints the keys of the image's big-data items, one per line, in the order they were set.",
)
def cmd_list_image_data(s: Session, a: argparse.Namespace) -> int:
    keys = s.store.big_data_names(a.ref)
    if s.json:
        s.emit(keys)
    else:
        for key in keys:
            s.line(key)
    return EXIT_OK


def _key_args(p: argparse.ArgumentParser) -> None:
    ref_argument(p)
    p.add_argument("key", metavar="KEY", help="big-data key, such as manifest")


def _get_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--file", metavar="FILE", default=None, help="write the data to FILE instead of stdout")
    p.add_argument(
        "--at",
        metavar="WHEN",
        default=None,
        help="the bytes the item had right after this record or at this time (see 'log'), kept by the journal",
    )
    _key_args(p)


@command(
    "get-image-data",
    aliases=("getimagedata",),
    access="read",
    args=_get_data_args,
    summary="Get data that is attached to an image",
    example="journalstore get-image-data -f manifest.json 3a57aedd manifest",
    description="Writes the item's bytes, unchanged, to stdout or FILE; with --at, the bytes it had then "
    "(kept by the journal after an overwrite or a delete, as long as retention keeps the record). --json prints "
    "{id, key, size, digest, file, data_base64} instead (data_base64 is null when -f is given).",
)
def cmd_get_image_data(s: Session, a: argparse.Namespace) -> int:
    if a.at is not None:
        from .audit_commands import parse_when

        view = s.store.at(parse_when(a.at))
        image = view.get(a.ref)
        data = view.big_data(image.id, a.key)
    else:
        image = s.store.get(a.ref)
        data = s.store.big_data(image.id, a.key)
    if a.file is not None:
        with open(a.file, "wb") as f:
            f.write(data)
    if s.json:
        import base64

        s.emit(
            {
                "id": image.id,
                "key": a.key,
                "size": len(data),
                "digest": image.big_data_digests.get(a.key, ""),
                "file": a.file,
                "data_base64": None if a.file is not None else base64.b64encode(data).decode("ascii"),
            }
        )
    elif a.file is None:
        s.out.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return EXIT_OK


def _set_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--file", metavar="FILE", default=None, help="read the data from FILE (default: stdin)")
    _key_args(p)


@command(
    "set-image-data",
    aliases=("setimagedata",),
    access="write",
    args=_set_data_args,
    summary="Set data that is attached to an image",
    example="journalstore set-image-data -f manifest.json 3a57aedd manifest",
    description="Stores FILE's bytes (or stdin's) under KEY, atomically. A key starting with 'manifest' adds "
    "the data's sha256 digest to the image's digests. Prints nothing (--json: {id, key, size, digest}).",
)
def cmd_set_image_data(s: Session, a: argparse.Namespace) -> int:
    image = s.store.get(a.ref)
    if a.file is not None:
        data = read_file(a.file)
    else:
        if isatty(sys.stdin):
            sys.stderr.write(f"{PROG}: reading the data from standard input (end it with Ctrl-D)\n")
        data = sys.stdin.buffer.read()
    s.store.set_big_data(image.id, a.key, data)
    if s.json:
        after = s.store.get(image.id)
        s.emit({"id": image.id, "key": a.key, "size": len(data), "digest": after.big_data_digests.get(a.key, "")})
    return EXIT_OK


@command(
    "get-image-data-size",
    aliases=("getimagedatasize",),
    access="read",
    args=_key_args,
    summary="Get the size of data that is attached to an image",
    example="journalstore get-image-data-size 3a57aedd manifest",
    description="Prints the size in bytes (--json: {id, key, size}).",
)
def cmd_get_image_data_size(s: Session, a: argparse.Namespace) -> int:
    image = s.store.get(a.ref)
    size = s.store.big_data_size(image.id, a.key)
    if s.json:
        s.emit({"id": image.id, "key": a.key, "size": size})
    else:
        s.line(str(size))
    return EXIT_OK


@command(
    "get-image-data-digest",
    aliases=("getimagedatadigest",),
    access="read",
    args=_key_args,
    summary="Get the digest of data that is attached to an image",
    example="journalstore get-image-data-digest 3a57aedd manifest",
    description="Prints the digest (--json: {id, key, digest}).",
)
def cmd_get_image_data_digest(s: Session, a: argparse.Namespace) -> int:
    image = s.store.get(a.ref)
    digest = check_digest(s.store.big_data_digest(image.id, a.key), f"recorded digest of {a.key!r}")
    if s.json:
        s.emit({"id": image.id, "key": a.key, "digest": digest})
    else:
        s.line(digest)
    return EXIT_OK


@command(
    "wipe",
    access="write",
    summary="Delete every image",
    example="journalstore wipe",
    description="One journal record deletes them all. Prints nothing (--json: {deleted: [IDs]}).",
)
def cmd_wipe(s: Session, a: argparse.Namespace) -> int:
    ids = [image.id for image in s.store.images()]
    s.store.wipe()
    if s.json:
        s.emit({"deleted": ids})
    return EXIT_OK


@command(
    "gc",
    access="write",
    summary="Remove image directories no image owns",
    example="journalstore gc",
    description="Removes sub-directories named by a 64-hex ID that no image has (left by a crash). "
    "Prints the names of the directories removed, one per line (--json: {removed: [...]}).",
)
def cmd_gc(s: Session, a: argparse.Namespace) -> int:
    removed = s.store.garbage_collect()
    if s.json:
        s.emit({"removed": removed})
    else:
        for name in removed:
            s.line(name)
    return EXIT_OK


