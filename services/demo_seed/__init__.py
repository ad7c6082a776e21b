"""Demo data: a dozen matters at every stage, made through the running services' own APIs.

``make run`` in demo mode calls this once all four services answer /healthz.  It
works as the demo users would (the operator records, inspectors claim and find,
the supervisor approves, the public rates), so every event crosses the bus as in
real use and each service's projection is its own.  Each step done is recorded in a
state file, so a seeding cut short is finished by the next start; without that file
it does nothing when intake already holds a complaint (a bureau's real data is left alone).
"""

from services.demo_seed.seeder import DEMO_PASSWORD, SeedError
from services.demo_seed.stages import SeedState, seed

__all__ = ["DEMO_PASSWORD", "SeedError", "SeedState", "seed"]
