"""Arrives with its issue; the family contract it will follow is docs/architecture.md."""
