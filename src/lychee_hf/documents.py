"""Reading the user's context files: plain text, or JSONL with one document per line."""

import json
from pathlib import Path


def read_documents(path: str | Path, field: str = "context") -> list[str]:
    """The documents in `path`: the whole file for text, one per line (`field` of each object) for `.jsonl`.

    Raises:
        `FileNotFoundError` if the file is missing; `ValueError` for an empty context, a malformed line or a
        line without `field`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"context file {path} does not exist")
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix != ".jsonl":
        if not text.strip():
            raise ValueError(f"context file {path} is empty")
        return [text]
    documents = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number} is not valid JSON ({error.msg})") from error
        value = record.get(field) if isinstance(record, dict) else None
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{path}:{number} has no non-empty string field {field!r} (choose it with --field)")
        documents.append(value)
    if not documents:
        raise ValueError(f"context file {path} holds no documents")
    return documents
