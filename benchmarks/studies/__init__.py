"""One-off performance studies behind design decisions; not part of the benchmark suite."""
