"""The gallery's search on PostgreSQL (the rest of storage.gallery is written once for both).

Search: the words of the text (storage.gallery.search_words), each lower-cased and with its
Latin diacritics folded exactly as the generated `jobs.search` column folds the prompt
(pg_migrations/0002_gallery.sql), then a prefix query per word under the 'english'
configuration (stemmed; 'kit' finds "kites"), all required. Ids compare bytewise (COLLATE "C"),
as SQLite compares them, whatever the database's collation.
"""
from __future__ import annotations

import re
from importlib import resources

from storage.gallery import search_words

_TRANSLATE = re.compile(r"translate\(lower\(prompt\),\s*'([^']*)',\s*'([^']*)'\)", re.S)


def _fold_table() -> dict[int, str]:
    sql = (resources.files("storage") / "pg_migrations" / "0002_gallery.sql").read_text(encoding="utf-8")
    m = _TRANSLATE.search(sql)
    assert m is not None and len(m.group(1)) == len(m.group(2)), "0002_gallery.sql: the fold table is malformed"
    return str.maketrans(m.group(1), m.group(2))


FOLD = _fold_table()


def fold(word: str) -> str:
    return word.lower().translate(FOLD)


def tsquery_terms(text: str | None) -> list[str]:
    """One `to_tsquery` argument per word: a quoted lexeme with a prefix mark (no operator gets through)."""
    return [f"'{fold(w)}':*" for w in search_words(text)]
