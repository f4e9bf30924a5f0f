"""Running a guard: the Runner protocol, eager and .pte backends, Guard (classify), streaming, batch."""
