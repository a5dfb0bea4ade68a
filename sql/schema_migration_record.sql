-- Recorded in the transaction that applies the migration.
INSERT INTO schema_migrations (version, name, applied_at) VALUES ($version, $name, now())
