"""Adapters that plug memd into agent frameworks; each imports its framework, so import them explicitly."""
