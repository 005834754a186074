"""Cell balancing: strategies (which cells want to bleed), conditions (when they may), the
coordinator run in every control tick, and the slave commands (see docs/balancing.md)."""
