"""The database: embedded PostgreSQL, pool, migrations, and every query the service runs."""
