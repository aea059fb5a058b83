"""What a compressed corpus's folder holds, in one place: the names of its own files, the bank folder named after
each document id (never one of those names), the check that a folder may take a run's output, the manifest written
and read back (checked: an entry can name no bank outside the folder), and the moves that put a verified bank into
place. `corpus.py` compresses into it; `questions.py` reads it.

    corpus.json              the manifest (`corpus_manifest`, `read_corpus_manifest`)
    <bank folder>/           one bank per document (`bank_folder_name`)
    .records/<folder>.json   per finished bank: what a rerun checks before skipping the document
    .lock                    held by the run writing the folder (`files.folder_lock`)
    .index/                  the lexical index over every document's blocks (`corpus_bank.write_corpus_index`)
    .partial-<folder>/       a bank being written; .stale-<folder>/: the bank it replaces, until it is in place
"""

import hashlib
import json
import re
import shutil
from pathlib import Path

CORPUS_FORMAT = "lychee-corpus"
CORPUS_VERSION = 1
CORPUS_MANIFEST = "corpus.json"
RECORDS = ".records"
PARTIAL = ".partial-"
STALE = ".stale-"
LOCK = ".lock"
# Names a bank folder never takes (compared without case: one folder on macOS and Windows): the corpus's own files
# (the manifest and its temporary file; the others start with "." and no bank folder does) and Windows device names.
RESERVED_FOLDERS = {CORPUS_MANIFEST, f"{CORPUS_MANIFEST}.tmp", "con", "prn", "aux", "nul"}
RESERVED_FOLDERS |= {f"{device}{n}" for device in ("com", "lpt") for n in range(10)}


def bank_folder_name(doc_id: str) -> str:
    """A folder name for a document id: the id itself when it is a safe file name, else a cleaned prefix of it
    plus a short hash of the whole id (so that two ids never share a folder). A name the corpus folder's own files
    use (`corpus.json`), or a device name on Windows, gets the hash too."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", doc_id)[:80].lstrip(".")
    if safe == doc_id and safe and safe.lower() not in RESERVED_FOLDERS:
        return safe
    return f"{safe or 'doc'}-{hashlib.sha256(doc_id.encode('utf-8')).hexdigest()[:10]}"


def is_plain_folder_name(name) -> bool:
    """Whether `name` names an entry of a folder itself: a non-empty string without separators, not `.` or `..`."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not any(character in name for character in "/\\\0")
        and Path(name).name == name
    )


def check_output_folder(out_dir: Path, fingerprint: dict) -> None:
    """Refuses a folder that holds anything but an earlier corpus run of this model (nothing is overwritten)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} is a file: name a folder for the banks")
    if not out_dir.exists() or not any(path.name != LOCK for path in out_dir.iterdir()):
        return
    manifest, records = out_dir / CORPUS_MANIFEST, out_dir / RECORDS
    if records.exists() and not records.is_dir():
        raise FileExistsError(f"{records} should be the folder of the banks' records but is a file: remove it")
    if not manifest.is_file() and not records.is_dir():
        raise FileExistsError(
            f"{out_dir} is not empty and holds no corpus output ({CORPUS_MANIFEST}): choose a new folder for the "
            "banks (nothing is overwritten)"
        )
    fingerprints = [read_json_object(manifest).get("fingerprint")] if manifest.is_file() else []
    fingerprints += [read_json_object(path).get("fingerprint") for path in sorted(records.glob("*.json"))]
    if any(other not in (None, fingerprint) for other in fingerprints):
        raise ValueError(
            f"{out_dir} holds banks made by another model or settings: choose a new folder for this model's banks "
            "(nothing is overwritten)"
        )


def move_into_place(partial: Path, out_dir: Path, folder: str) -> None:
    """Renames a verified bank to its folder; an older bank there (whose record no longer matches) goes first,
    record before folder, so no record ever names a bank it does not describe."""
    (out_dir / RECORDS / f"{folder}.json").unlink(missing_ok=True)
    final, stale = out_dir / folder, out_dir / f"{STALE}{folder}"
    if final.exists() or final.is_symlink():
        _remove(stale)
        final.rename(stale)
    partial.rename(final)
    _remove(stale)


def sweep(out_dir: Path) -> None:
    """Removes `.partial-` / `.stale-` leftovers of documents no longer in the corpus (main process, at the end)."""
    for path in out_dir.iterdir():
        if path.name.startswith((PARTIAL, STALE)):
            _remove(path)


def retire_reserved_folders(out_dir: Path) -> None:
    """Removes a bank that an older version wrote under a name the folder's own files take (a document with id
    `corpus.json`), and its record, so the manifest can be written; the document is compressed again, under its
    new folder name."""
    for name in (CORPUS_MANIFEST, f"{CORPUS_MANIFEST}.tmp"):
        if (out_dir / name).is_dir():
            (out_dir / RECORDS / f"{name}.json").unlink(missing_ok=True)
            shutil.rmtree(out_dir / name)


def _remove(path: Path) -> None:
    """Removes a file, link or folder tree if there is one."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def corpus_manifest(entries: list[dict], fingerprint: dict, corpus, field: str, id_field: str | None) -> dict:
    """The manifest of a run: its settings, counts, and one entry per document in corpus order."""
    ok = [e for e in entries if e["status"] == "ok"]
    return {
        "format": CORPUS_FORMAT,
        "version": CORPUS_VERSION,
        "source": str(corpus),
        "field": field,
        "id_field": id_field or "id",
        "fingerprint": fingerprint,
        "documents": len(entries),
        "ok": len(ok),
        "failed": len(entries) - len(ok),
        "tokens": sum(e["tokens"] for e in ok),
        "entries": entries,
    }


def read_json_object(path: Path) -> dict:
    """A JSON object from `path`, or `{}` when it is missing or unreadable (then it counts as absent)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_corpus_manifest(out_dir: str | Path) -> dict:
    """The manifest of a compressed corpus, its entries checked: each names its id and status, and an `ok` entry a
    bank folder inside `out_dir` (a plain folder name: a manifest cannot send a reader elsewhere).

    Raises:
        `FileNotFoundError` if `out_dir` holds no `corpus.json`; `ValueError` if it is not a corpus manifest, or
        an entry is malformed or names a bank outside `out_dir`.
    """
    path = Path(out_dir) / CORPUS_MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir} holds no compressed corpus ({CORPUS_MANIFEST} not found)")
    manifest = read_json_object(path)
    if manifest.get("format") != CORPUS_FORMAT or manifest.get("version") != CORPUS_VERSION:
        raise ValueError(f"{path} is not a {CORPUS_FORMAT} v{CORPUS_VERSION} manifest: compress the corpus again")
    entries = manifest.get("entries")
    if not isinstance(entries, list):
        raise ValueError(f"{path} is damaged (its 'entries' is not a list): compress the corpus again")
    for index, entry in enumerate(entries):
        problem = _entry_problem(entry)
        if problem:
            raise ValueError(f"{path} is damaged or was edited: entries[{index}] {problem}; compress the corpus again")
    return manifest


def _entry_problem(entry) -> str | None:
    """What is wrong with a manifest entry, or `None`."""
    if not isinstance(entry, dict):
        return "is not an object"
    if not isinstance(entry.get("id"), str):
        return f"has no string 'id' (got {entry.get('id')!r})"
    if entry.get("status") not in ("ok", "failed"):
        return f"has status {entry.get('status')!r}, not 'ok' or 'failed'"
    bank = entry.get("bank")
    if entry["status"] == "ok" and not is_plain_folder_name(bank):
        return f"names bank {bank!r}, which is not a folder name inside the corpus folder"
    return None


__all__ = [
    "CORPUS_MANIFEST",
    "bank_folder_name",
    "check_output_folder",
    "corpus_manifest",
    "read_corpus_manifest",
]
