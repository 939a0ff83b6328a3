"""The gallery's search on PostgreSQL (the rest of storage.gallery is written once for both).

Search: the words of the text, each lower-cased and with its Latin diacritics folded exactly as
the generated `jobs.search` column folds the prompt (pg_migrations/0002_gallery.sql), then a
prefix query per word under the 'english' configuration (stemmed; 'kit' finds "kites"), all
required. Ids compare bytewise (COLLATE "C"), as SQLite compares them, whatever the database's
collation. The word handling itself is storage.search's (a leaf both dialects use).
"""
from __future__ import annotations

from storage.search import FOLD, fold, search_words, tsquery_terms

__all__ = ["FOLD", "fold", "search_words", "tsquery_terms"]
