"""The chaos suite: proves "no SMS lost, none sent twice" under faults, against real parts only.

Run it with ``python -m chaos.run --messages N`` (``--ci`` for the CI-sized run); see chaos/run.py.
"""
