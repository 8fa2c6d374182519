"""Trainers and their pure algorithm core (losses, curriculum)."""
