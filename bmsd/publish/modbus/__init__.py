"""Modbus TCP server: the native register map and the SunSpec battery models.

``registers`` holds the native map as one table, ``sunspec`` lays out the SunSpec models from
pysunspec2's model definitions, ``server`` serves both from the newest PackState, ``writes``
validates holding-register writes and supervises the EMS heartbeat, ``metrics`` exposes the
server's counters to Prometheus. ``config`` is the ``[modbus]`` section of the config file.
"""
