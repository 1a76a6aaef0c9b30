"""Where flushed data lives, behind one protocol (base.Store) the engine talks to.

- ``base``: the Store protocol and the row shapes every store answers in;
- pure parts, shared by any store: ``tokens`` (full-text tokens), ``filters`` (FILTER
  and scopes as SQL), ``rows`` (a frozen memtable as rows to write);
- the SQLite store: ``schema`` (tables and migrations), ``statements`` (its writes),
  ``search`` (the search planner), ``csqlite`` (the optional C extension), ``sqlite``
  (the store itself);
- ``sqlitefile``: statements on a SQLite file that no running store holds (``memd
  check``, backup verification).

Only this package speaks SQL.
"""
