"""Rollouts (engine + environment) and packing of trajectories into fixed-shape training batches."""
