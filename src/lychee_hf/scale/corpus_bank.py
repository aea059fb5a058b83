"""A compressed corpus read as one bank, so a question needs no document named: the first stage's index ranks the
blocks of every document, the gate scores those candidates, the reasoner reads the related ones, and the answer
says which document(s) they came from.

    corpus/.index/          the corpus's lexical index (bm25s files) and `lychee-index.json`: which documents,
                            in which order, with their text's checksum; rebuilt when they change

`compress --corpus` writes the index after the banks (`write_corpus_index`); a corpus compressed before that
(or changed since) gets one built in memory when it is asked (seconds per million tokens) and can be given a saved
one by running `compress --corpus` again (nothing is compressed twice).
"""

import bisect
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..files import write_json_atomically
from ..modeling import DocumentText, LexicalIndex, LycheeMemoryBank
from .corpus_folder import read_corpus_manifest

INDEX_FOLDER = ".index"
INDEX_RECORD = "lychee-index.json"


@dataclass(frozen=True)
class CorpusPlace:
    """Where a corpus-wide block or character lives: the document's id and its own block / character offset."""

    document: str
    local: int


class CorpusBank:
    """The banks of a compressed corpus, end to end, as one bank `generate` reads (`len`, `block(i)`, `spans`,
    `document_text`, `check_compatible`). Block `i` is block `i - first[d]` of document `d`; the text is the
    documents' texts joined by a blank line, so evidence offsets map back to a document (`place_of_char`).

    Args:
        banks (`list[tuple[str, LycheeMemoryBank]]`): `(document id, bank)` in corpus order.
    """

    def __init__(self, banks: list[tuple[str, LycheeMemoryBank]]):
        if not banks:
            raise ValueError("the corpus holds no compressed document: nothing to ask")
        self.ids = [doc_id for doc_id, _ in banks]
        self.banks = [bank for _, bank in banks]
        self.first_block = [0]
        for bank in self.banks:
            self.first_block.append(self.first_block[-1] + len(bank))
        self.fingerprint = self.banks[0].fingerprint
        self._text: DocumentText | None = None
        self._first_char: list[int] = []

    @classmethod
    def from_folder(cls, corpus_dir: str | Path) -> "CorpusBank":
        """Every `ok` document of a corpus folder (`compress --corpus`), its banks read lazily from disk, with the
        saved index when it still matches the documents."""
        corpus_dir = Path(corpus_dir)
        entries = [e for e in read_corpus_manifest(corpus_dir)["entries"] if e["status"] == "ok"]
        bank = cls([(e["id"], LycheeMemoryBank.from_pretrained(corpus_dir / e["bank"])) for e in entries])
        bank.load_index(corpus_dir)
        return bank

    # ------------------------------------------------------------------------------------------ the bank
    def __len__(self) -> int:
        return self.first_block[-1]

    @property
    def complete(self) -> bool:
        return all(bank.complete for bank in self.banks)

    @property
    def num_tokens(self) -> int:
        return sum(bank.num_tokens for bank in self.banks)

    @property
    def spans(self) -> list[tuple[int, int]]:
        """Each block's token span in its own document (a corpus has no single token axis)."""
        return [span for bank in self.banks for span in bank.spans]

    def block(self, index: int):
        document = self._document_of_block(index)
        return self.banks[document].block(index - self.first_block[document])

    def check_compatible(self, expected_fingerprint: dict) -> None:
        for doc_id, bank in zip(self.ids, self.banks):
            try:
                bank.check_compatible(expected_fingerprint)
            except ValueError as error:
                raise ValueError(f"document {doc_id!r} of the corpus: {error}") from error

    @property
    def document_text(self) -> DocumentText | None:
        """The documents' texts joined by a blank line, with every block's characters in it (None when a
        document's bank keeps no text)."""
        if self._text is None:
            texts = [bank.document_text for bank in self.banks]
            if any(text is None for text in texts):
                return None
            parts, chars, offset = [], [], 0
            for text in texts:
                self._first_char.append(offset)
                parts.append(text.text)
                chars += [(start + offset, end + offset) for start, end in text.chars]
                offset += len(text.text) + 2
            self._text = DocumentText("\n\n".join(parts), tuple(chars))
        return self._text

    # ------------------------------------------------------------------------------------------ places
    def _document_of_block(self, index: int) -> int:
        if not 0 <= index < len(self):
            raise IndexError(f"block {index} of a corpus of {len(self)} blocks")
        return bisect.bisect_right(self.first_block, index) - 1

    def place_of_block(self, index: int) -> CorpusPlace:
        document = self._document_of_block(index)
        return CorpusPlace(self.ids[document], index - self.first_block[document])

    def place_of_char(self, offset: int) -> CorpusPlace:
        if self.document_text is None:
            raise ValueError("the corpus keeps no text")
        document = bisect.bisect_right(self._first_char, offset) - 1
        return CorpusPlace(self.ids[document], offset - self._first_char[document])

    # ------------------------------------------------------------------------------------------ index
    def index_record(self) -> dict:
        """What a saved index must match: the documents, in order, and their text's checksum."""
        text = [bank.document_text for bank in self.banks]
        return {
            "documents": [[doc_id, t.sha256 if t else None] for doc_id, t in zip(self.ids, text)],
            "blocks": len(self),
        }

    def passages(self) -> list[str]:
        text = self.document_text
        return [text.block_text(i)[1] for i in range(len(self))]

    def load_index(self, corpus_dir: Path) -> bool:
        """Takes the corpus's saved index when it matches these documents; returns whether it did (else the
        first stage builds one in memory on first use)."""
        folder = Path(corpus_dir) / INDEX_FOLDER
        try:
            saved = json.loads((folder / INDEX_RECORD).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if self.document_text is None or saved != self.index_record():
            return False
        try:
            self._lexical_index = LexicalIndex.load(folder, self.passages())
        except (OSError, ValueError):
            return False
        return True


def write_corpus_index(corpus_dir: str | Path) -> Path | None:
    """Builds the corpus's lexical index over every `ok` document's blocks and saves it in `corpus_dir/.index`
    (replacing an older one); returns its folder, or None when a document's bank keeps no text to index."""
    corpus_dir = Path(corpus_dir)
    entries = [e for e in read_corpus_manifest(corpus_dir)["entries"] if e["status"] == "ok"]
    if not entries:
        return None
    bank = CorpusBank([(e["id"], LycheeMemoryBank.from_pretrained(corpus_dir / e["bank"])) for e in entries])
    if bank.document_text is None:
        return None
    partial, final = corpus_dir / f"{INDEX_FOLDER}.partial", corpus_dir / INDEX_FOLDER
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    LexicalIndex(bank.passages()).save(partial)
    write_json_atomically(partial / INDEX_RECORD, bank.index_record())
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return final


def name_documents(result: dict, bank: CorpusBank) -> dict:
    """Adds to one answer (`LycheeTrace.to_dict` plus the CLI's fields) where each part lives in the corpus:
    `documents` (the ids of the documents whose blocks were read, in corpus order), per trace row `document` and
    `document_block`, per evidence item `document`, `document_start` and `document_end` (characters in that
    document's own text)."""
    read = []
    for row in result["trace"]:
        place = bank.place_of_block(row["block"])
        row["document"], row["document_block"] = place.document, place.local
        if row["kept"] and place.document not in read:
            read.append(place.document)
    result["documents"] = sorted(read, key=bank.ids.index)
    for item in result.get("evidence") or []:
        place = bank.place_of_char(item["start"])
        item["document"], item["document_start"] = place.document, place.local
        item["document_end"] = place.local + (item["end"] - item["start"])
    return result
