"""Shared basics every room uses: errors, project paths, file locks, atomic writes and digests, KEY=VALUE settings."""
