"""The control loop: the only writer of state, one tick at a time."""
