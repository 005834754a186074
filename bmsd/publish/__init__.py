"""Publishers: read the newest PackState and speak to the outside (inverters, Modbus, metrics)."""
