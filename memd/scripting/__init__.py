"""Lua scripting (EVAL and friends): Redis 7.0's Lua 5.1 environment on lupa.

- :mod:`memd.scripting.runtime`: the Lua state, the script cache, the ``redis`` API;
- :mod:`memd.scripting.luasrc`: the Lua side (sandbox, error handler, kill hook);
- :mod:`memd.scripting.convert`: reply <-> Lua value conversions;
- :mod:`memd.scripting.cjsonlib`, :mod:`~memd.scripting.msgpack`, :mod:`~memd.scripting.bitlib`,
  :mod:`~memd.scripting.structlib`: the libraries Redis bundles;
- :mod:`memd.scripting.worker`: the thread scripts run in, so that the event loop stays free.
"""
