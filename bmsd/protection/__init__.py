"""Protection: the fault table, fault evaluation, the BMS state machine and current limits.

Everything here is pure: functions of (state, inputs, config, now) with no clock and no I/O.
"""
