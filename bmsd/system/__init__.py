"""Integration with the operating system: logging, and (later) sd_notify and the watchdog."""
