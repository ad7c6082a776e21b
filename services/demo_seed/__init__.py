"""Demo data: a dozen matters at every stage, made through the running services' own APIs.

``make run`` in demo mode calls this once all four services answer /healthz.  It
works as the demo users would (the operator records, inspectors claim and find,
the supervisor approves, the public rates), so every event crosses the bus as in
real use and each service's projection is its own.  It does nothing when intake
already holds a complaint: a second start, or a bureau's real data, is left alone.
"""

from services.demo_seed.seeder import DEMO_PASSWORD, SeedError
from services.demo_seed.stages import seed

__all__ = ["DEMO_PASSWORD", "SeedError", "seed"]
