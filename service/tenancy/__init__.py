"""Keys as tenants: per-key limits counted at admission, in process or in Redis.

- ``store``: the ``LimitStore`` protocol, its decision, and the in-process store;
- ``redis_store``: the same counters in Redis, one atomic Lua script per step,
  shared by every replica;
- ``reserve``: the most tokens a plan can spend (what admission reserves);
- ``limiter``: admission and settlement for one key, the errors and metrics.
"""
