"""Temporal code for snapship."""
