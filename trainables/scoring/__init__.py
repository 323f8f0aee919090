"""Scoring generations: answer extraction and metrics, batched evaluation, the calculator, the sandbox.
Imports only `data` among the subpackages."""
