"""Publishers: read the newest PackState and serve it (Modbus, inverter CAN, Prometheus)."""
