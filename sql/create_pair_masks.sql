-- One row per run x modality x class pair (class_a < class_b in class order): the pair's kept dimensions.
CREATE TABLE IF NOT EXISTS pair_masks (
    run_id   VARCHAR NOT NULL,
    modality VARCHAR NOT NULL,
    class_a  VARCHAR NOT NULL,
    class_b  VARCHAR NOT NULL,
    n_dims   INTEGER NOT NULL,
    dims     INTEGER[] NOT NULL,
    n_a      BIGINT NOT NULL,     -- confident items of class_a against class_b
    n_b      BIGINT NOT NULL,     -- confident items of class_b against class_a
    fallback BOOLEAN NOT NULL     -- too few confident items: all dimensions kept
)
