"""Token buckets for the public endpoints: a guesser of query secrets is slowed, a person is not.

The buckets live in this process's memory.  That is deliberate: the limit
exists to make guessing a secret of 10 characters hopeless, and a factor of
the number of feedback instances does not change that, whereas a shared store
would add a dependency the public page then cannot work without.  A restart
forgets the buckets, which at worst gives a guesser one fresh burst.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from fastapi import HTTPException, Request

TOO_MANY = "查询过于频繁，请稍后再试"


class TokenBuckets:
    """``capacity`` tokens per key, refilled evenly over ``window_seconds``; one request takes one."""

    def __init__(self, *, capacity: int, window_seconds: float, max_keys: int = 100_000) -> None:
        self.capacity = capacity
        self.rate = capacity / window_seconds if capacity else 0.0
        self.max_keys = max_keys
        # Least recently used first, so memory stays bounded however many addresses or codes appear.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float) -> float:
        """Take a token for ``key``: 0.0 when allowed, otherwise the seconds until one is available."""
        if self.capacity <= 0:
            return 0.0
        tokens, last = self._buckets.pop(key, (float(self.capacity), now))
        tokens = min(float(self.capacity), tokens + max(now - last, 0.0) * self.rate)
        if tokens >= 1.0:
            self._store(key, tokens - 1.0, now)
            return 0.0
        self._store(key, tokens, now)
        return (1.0 - tokens) / self.rate

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)


class PublicLimiter:
    """Limits per client address and per tracking code, for the lookup, rating and review request."""

    def __init__(
        self, *, per_address: int, per_code: int, window_seconds: float, trusted_proxy_hops: int = 0
    ) -> None:
        self.by_address = TokenBuckets(capacity=per_address, window_seconds=window_seconds)
        self.by_code = TokenBuckets(capacity=per_code, window_seconds=window_seconds)
        self.trusted_proxy_hops = trusted_proxy_hops

    def client_address(self, request: Request) -> str:
        peer = request.client.host if request.client else "unknown"
        if self.trusted_proxy_hops <= 0:
            return peer
        # Each trusted proxy appends the address it received from; entries further left are client-supplied
        # and could be forged, so take the one our outermost trusted proxy saw.
        forwarded = [p.strip() for p in request.headers.get("x-forwarded-for", "").split(",") if p.strip()]
        if len(forwarded) >= self.trusted_proxy_hops:
            return forwarded[-self.trusted_proxy_hops]
        return forwarded[0] if forwarded else peer

    def check(self, request: Request, tracking_code: str) -> None:
        """Raise 429 with Retry-After when the address or the code has used its tokens."""
        now = time.monotonic()
        wait = self.by_address.take(self.client_address(request), now)
        if not wait:
            wait = self.by_code.take(tracking_code.strip().upper(), now)
        if wait:
            raise HTTPException(
                status_code=429,
                detail=TOO_MANY,
                headers={"Retry-After": str(max(1, math.ceil(wait))), "Cache-Control": "no-store"},
            )
