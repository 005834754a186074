"""Inverter CAN profiles: profile files and DBCs as data, one generic sender, supervision."""
