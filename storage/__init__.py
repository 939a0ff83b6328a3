"""Job store (aiosqlite, WAL, migrations) and media files on disk."""
