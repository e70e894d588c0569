"""Load generators for eventservice: ``python -m bench ingest|fanout|lookup|soak``.

Every scenario starts the service itself (and, without a database URL, a throwaway
PostgreSQL from ``pgserver``), drives it with aiohttp clients on 127.0.0.1 only, and
prints a markdown table. Every loop is bounded in count and in time.
"""
