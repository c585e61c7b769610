"""See ARCHITECTURE.md; this family arrives with its issue."""
