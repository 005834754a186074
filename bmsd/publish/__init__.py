"""Publishers: everything that reads the newest PackState and tells the outside world.

Publishers never decide anything: they read ``StateHub.latest`` and send commands through the
control loop's queue (see docs/architecture.md).
"""
