"""A gallery search's words, as each backend's full-text search takes them (a leaf: the dialects
in storage.sql and the gallery's queries both use it).

SQLite: each word quoted with a prefix mark for FTS5. PostgreSQL: each word lower-cased and its
Latin diacritics folded exactly as the generated `jobs.search` column folds the prompt
(pg_migrations/0002_gallery.sql), a prefix query per word under the 'english' configuration.
"""
from __future__ import annotations

import re
from importlib import resources

#: Words of a search, at most this many (a longer text is cut, not refused).
MAX_SEARCH_WORDS = 8
_WORD = re.compile(r"\w+", re.UNICODE)
_TRANSLATE = re.compile(r"translate\(lower\(prompt\),\s*'([^']*)',\s*'([^']*)'\)", re.S)


def search_words(text: str | None) -> list[str]:
    return _WORD.findall(text or "")[:MAX_SEARCH_WORDS]


def fts_match(text: str | None) -> str | None:
    """A user's search text as an FTS5 query: each word quoted (no operators get through) and a prefix."""
    words = search_words(text)
    if not words:
        return None
    return " ".join('"' + w.replace('"', '""') + '"*' for w in words)


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
