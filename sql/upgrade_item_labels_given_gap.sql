-- Files written before the review columns existed get them (NULL for their runs).
ALTER TABLE item_labels ADD COLUMN IF NOT EXISTS given_gap REAL
