"""Process-reward-model adapters, one module per published format (see :mod:`rewards.catalog`)."""
