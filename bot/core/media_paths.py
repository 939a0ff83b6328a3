"""Moved to `storage.media_paths`: the store translates media paths in its row mapping
(open it with `media_root`). Kept as an import for the callers that still name it here."""
from storage.media_paths import STATE_PATHS, MediaPaths

__all__ = ["STATE_PATHS", "MediaPaths"]
