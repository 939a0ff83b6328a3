"""The PostgreSQL store (asyncpg): for several processes on several machines sharing one database."""
from storage.pg.store import PgJobStore

__all__ = ["PgJobStore"]
