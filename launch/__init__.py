"""What the user touches: the CLI, job files, the supervisor, reports and benchmarks."""
