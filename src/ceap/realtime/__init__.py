"""The real-time path: events in, per-customer state, micro-batches through the
same stages as batch programs, candidates out within milliseconds."""
