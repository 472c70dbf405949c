"""Processes that hold replicas: Ray actors, the coordinator, the ring and MPI communicators."""
