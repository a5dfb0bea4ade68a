-- Which of the tables that mark a DuckDB file as ours it holds: schema_migrations (a file whose schema
-- version is recorded) and runs (every file our code has written to, versioned or not).
SELECT table_name FROM duckdb_tables()
WHERE database_name = current_database() AND schema_name = 'main' AND table_name IN ('schema_migrations', 'runs')
