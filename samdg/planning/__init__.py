"""Planning: dataset fingerprint -> plans (every decision with its reason) -> ``samdgPlans.json``."""

from samdg.planning.plans import Plans, apply_overrides

__all__ = ["Plans", "apply_overrides"]
