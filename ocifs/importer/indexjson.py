"""Merging entries into the layout's index.json without ever losing one.

Read-modify-write happens under the layout lock (`durable.layout_lock`), and
index.json is re-read under it, so concurrent importers — in one mount, in
several ocifs processes, or any tool following the same convention — never
overwrite each other's entries. The new file replaces the old one atomically
(temp, fsync, rename, fsync dir): readers see the old or the new index, whole.

Merge rule: an entry with a ref name replaces every entry with the same name;
an entry identical to one already present changes nothing; anything else is
appended. The name of an entry is its `io.containerd.image.name` annotation, or
else `org.opencontainers.image.ref.name` — the same choice `ocifs.catalog` makes,
so "same name" here means "same directory under refs/". When nothing changes,
index.json is not rewritten at all. Callers merge only entries whose closure is
complete (`ocifs.importer.closure`). A file with duplicate JSON keys is
rewritten canonically (the last value wins, as when it is read).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from ocifs import durable
from ocifs.errors import BlobUnavailable, InvalidInput
from ocifs.importer.staging import LOCK_FILE, staging_dir
from ocifs.model import documents, reference
from ocifs.model import mediatypes as mt
from ocifs.model.descriptor import CONTAINERD_NAME, REF_NAME

Entry = dict[str, Any]


def entry_name(entry: Entry) -> str | None:
    ann = entry.get("annotations") or {}
    if not isinstance(ann, dict):
        return None
    name = ann.get(CONTAINERD_NAME) or ann.get(REF_NAME)
    return name if isinstance(name, str) and name else None


def check_names(entries: Sequence[Entry], where: str) -> None:
    """Refuse entries whose name would become a ref but is not a valid reference.

    Checked for every entry before anything is committed, so an import is
    refused whole (one line naming the tag), never partly tagged.
    """
    for entry in entries:
        ann = entry.get("annotations") or {}
        if not isinstance(ann, dict):
            continue
        try:
            if CONTAINERD_NAME in ann:
                reference.parse_docker_ref(ann[CONTAINERD_NAME], allow_digest=True)
            if REF_NAME in ann:
                reference.check_ref_name(ann[REF_NAME])
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: refused, tag {exc}") from None


def merge(existing: list[Entry], new: Sequence[Entry]) -> list[Entry] | None:
    """The merged manifests list, or None when `new` changes nothing."""
    result = list(existing)
    changed = False
    for entry in new:
        name = entry_name(entry)
        if name is None:
            if entry in result:
                continue
        else:
            same = [e for e in result if entry_name(e) == name]
            if same == [entry]:
                continue
            result = [e for e in result if entry_name(e) != name]
        result.append(entry)
        changed = True
    return result if changed else None


def load_index(path: str) -> dict[str, Any]:
    """index.json as a dict (an absent file reads as an empty index)."""
    try:
        with open(path, "rb") as f:
            data = f.read(documents.MAX_DOCUMENT_BYTES + 1)
    except FileNotFoundError:
        return {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
    obj = documents.load_json(data, path)
    # umoci writes "manifests": null for an empty layout
    if not isinstance(obj, dict) or not isinstance(obj.get("manifests") or [], list):
        raise InvalidInput(f"{path}: not an image index; refusing to rewrite it")
    return obj


Edit = Callable[[list[Entry]], list[Entry] | None]


def rewrite(layout: str, edit: Edit, lock_timeout: float) -> bool:
    """Apply `edit` to the manifests list of `<layout>/index.json` under the layout lock.

    `edit` gets the list as re-read under the lock and returns the new list, or
    None for "nothing to change" (then the file is not rewritten). It may raise
    to abort: index.json stays as it was. Returns True if the file was rewritten.
    Blocking (waits for the lock, fsyncs): call from a worker thread.
    """
    path = os.path.join(layout, "index.json")
    with durable.layout_lock(os.path.join(layout, LOCK_FILE), lock_timeout):
        # Under the lock: `staging.remove_if_unused` removes it only under the lock.
        durable.makedirs(staging_dir(layout))
        obj = load_index(path)
        edited = edit(list(obj.get("manifests") or []))
        if edited is None:
            return False
        obj["manifests"] = edited
        obj.setdefault("schemaVersion", 2)
        data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
        durable.replace_file(path, data, staging_dir(layout))
    return True


def _check_present(layout: str, entries: Sequence[Entry]) -> None:
    """Every blob the new entries need is still there (under the lock, so `ocifs gc`,
    which holds it while deleting, cannot remove one before index.json names it)."""
    from ocifs.importer import closure
    from ocifs.model import descriptor

    view = closure.BlobView(layout)
    for entry in entries:
        desc = descriptor.parse(entry, "index entry")
        gone = closure.missing(view, desc)
        if gone:
            names = ", ".join(sorted(str(d) for d in gone)[:3])
            raise BlobUnavailable(
                f"blob(s) {names} were removed while this import ran (ocifs gc or rm in "
                "blobs/?); nothing was tagged: import again"
            )


def update(
    layout: str, new: Sequence[Entry], lock_timeout: float, *, check_present: bool = False
) -> bool:
    """Merge `new` into `<layout>/index.json`; True if the file was rewritten.

    `check_present`: re-check under the lock that every blob the new entries
    reach is still there (importers pass it: `ocifs gc` holds the same lock
    while it deletes, so an entry can never name a blob gc just removed).

    Blocking (waits for the lock, fsyncs): call from a worker thread.
    """
    if not new:
        return False

    def edit(existing: list[Entry]) -> list[Entry] | None:
        merged = merge(existing, new)
        if merged is not None and check_present:
            _check_present(layout, new)
        return merged

    return rewrite(layout, edit, lock_timeout)
