"""Communicators: one module per data path (star, shared memory, ring, MPI)."""
