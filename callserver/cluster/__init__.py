"""Several nodes (DESIGN, Scale): the Redis connection, the node registry, draining, admission, metrics.

Without `redis_url` a node is alone: admission and metrics still work, the registry is not started.
"""
