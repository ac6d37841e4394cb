"""Untag and retag: edits of index.json entries by ref name.

A ref is the directory `refs/<a>/<b>` that an entry's name maps to
(`ocifs.model.naming.ref_path`; the name is `io.containerd.image.name`, else
`org.opencontainers.image.ref.name`, as everywhere in ocifs). Both edits run
under the layout lock with index.json re-read under it and replaced atomically
(`indexjson.rewrite`), so they never lose an import's entry and a crash leaves
the old or the new file. Blobs are never touched: they stay until `ocifs gc`.
"""

from __future__ import annotations

from typing import Any

from ocifs.errors import AlreadyExists, InvalidInput, NotEmpty, NotFound
from ocifs.importer import indexjson
from ocifs.importer.indexjson import Entry, entry_name
from ocifs.model.descriptor import CONTAINERD_NAME, REF_NAME
from ocifs.model.naming import ref_path

Path = tuple[str, ...]


def _path(entry: Entry) -> Path | None:
    name = entry_name(entry)
    return ref_path(name) if name else None


def _under(path: Path | None, prefix: Path) -> bool:
    return path is not None and path[: len(prefix)] == prefix


def _show(path: Path) -> str:
    return "/".join(path)


def untag(layout: str, path: Path, lock_timeout: float) -> int:
    """Remove exactly the entries whose name is `path`; returns how many.

    `NotFound` if none (another process untagged it first): index.json unchanged.
    """
    removed = 0
    name = _show(path)  # the one name that maps to `path` (ref_path splits on '/')

    def edit(entries: list[Entry]) -> list[Entry] | None:
        nonlocal removed
        kept = [e for e in entries if entry_name(e) != name]
        removed = len(entries) - len(kept)
        if not removed:
            raise NotFound(f"refs/{_show(path)}: no such ref in index.json")
        return kept

    indexjson.rewrite(layout, edit, lock_timeout)
    return removed


def _tag_of(name: str) -> str | None:
    """The tag of a `repo:tag` name (after the last ':' that follows the last '/')."""
    head, sep, tag = name.rpartition(":")
    return tag if sep and "/" not in tag and head else None


def renamed(entry: Entry, new_name: str) -> Entry:
    """`entry` named `new_name`, in the annotation(s) that named it.

    With an `io.containerd.image.name`, that one gets the full name, and
    `org.opencontainers.image.ref.name` follows if it held the old full name or
    the old tag (containerd's export convention). Otherwise the OCI annotation
    gets the full name (what skopeo and umoci look up).
    """
    old_name = entry_name(entry) or ""
    ann: dict[str, Any] = dict(entry.get("annotations") or {})
    if CONTAINERD_NAME in ann:
        ann[CONTAINERD_NAME] = new_name
        oci = ann.get(REF_NAME)
        if oci == old_name:
            ann[REF_NAME] = new_name
        elif oci is not None and oci == _tag_of(old_name):
            ann[REF_NAME] = _tag_of(new_name) or new_name
    else:
        ann[REF_NAME] = new_name
    return {**entry, "annotations": ann}


def retag(layout: str, old: Path, new: Path, *, replace: bool, lock_timeout: float) -> int:
    """Rename the ref `old` — and every ref below it, as `mv` moves a directory — to `new`.

    Existing refs at the destination names are replaced (their entries removed)
    when `replace`; otherwise `AlreadyExists`. A destination that only holds
    other refs below it is `NotEmpty` (rename(2) does not replace a non-empty
    directory). One index.json rewrite; returns how many entries were renamed.
    """
    if new[: len(old)] == old:
        raise InvalidInput(f"refs/{_show(old)}: cannot move a ref into itself")
    moved = 0

    def edit(entries: list[Entry]) -> list[Entry] | None:
        nonlocal moved
        paths = [_path(e) for e in entries]
        moving = [p for p in paths if p is not None and _under(p, old)]
        if not moving:
            raise NotFound(f"refs/{_show(old)}: no such ref in index.json")
        targets = {(*new, *p[len(old):]) for p in moving}
        if any(_under(p, new) and p not in targets for p in paths):
            raise NotEmpty(f"refs/{_show(new)}: holds other refs; not replaced")
        if not replace and any(p in targets for p in paths):
            raise AlreadyExists(f"refs/{_show(new)}: exists")
        out: list[Entry] = []
        for e, p in zip(entries, paths, strict=True):
            if p is not None and _under(p, old):
                out.append(renamed(e, _show((*new, *p[len(old):]))))
                indexjson.check_names(out[-1:], f"refs/{_show(new)}")  # as imports check
                moved += 1
            elif p not in targets:
                out.append(e)  # entries at a target name are replaced by the moved ones
        return out

    indexjson.rewrite(layout, edit, lock_timeout)
    return moved
