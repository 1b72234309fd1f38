"""Shared helpers for the poet-LLM course notebooks (see README.md for the course map)."""

__version__ = "0.1.0"
