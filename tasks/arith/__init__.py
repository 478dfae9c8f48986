"""The arith domain: generated multi-step arithmetic, the bundled tiny model trained on it, an exact
step-checking PRM, an outcome verifier and a learned value model."""
