"""The write-behind storage engine: WAL + memtable + batched flush to SQLite.

See :mod:`memd.engine.engine` for the public API.
"""
