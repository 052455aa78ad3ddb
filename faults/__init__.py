"""The fault campaign (`make faults`): real Redis, real workers, real kills."""
