"""Pure data of bmsd: topology, readings, snapshots and states. No I/O here."""
