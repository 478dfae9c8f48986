"""Adapters from :func:`reason.rollout` to RL trainers (TRL today)."""
