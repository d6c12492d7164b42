"""Storage: SQLModel tables, the engine and migrations, and the queries that write."""
