"""Optimizer tests: torch.optim is the oracle."""
