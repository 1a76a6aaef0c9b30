"""Scheduled maintenance: compaction, backups, the memory watchdog (issue 5).

These modules stand beside ``memd.commands`` above the engine: they use the
engine's API and never see a socket; the daemon wires them to the scheduler
and the server reaches them through the object it is given.
"""
