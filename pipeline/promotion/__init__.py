"""Promote a run's model to the registry.

- `promotion`: a new model version, an alias, the reason and, with data, the gates it passed;
- `gates`: the gates themselves (metric floors, no class worse than the model replaced), pure.
"""
