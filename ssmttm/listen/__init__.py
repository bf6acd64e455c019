"""Blind listening tests: the kit (loudness-matched anonymous clips, per-rater orders), the rating app
(Flask + SQLite, or a static export whose ratings come back as JSON files) and the MOS tables.
See docs/listening.md."""
