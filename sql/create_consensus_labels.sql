-- One label per run and item, from all its modalities together: what downstream systems consume.
-- Succeeded runs only, every one of them (catalog_labels and current_labels give each live item as the run that
-- last labelled it): a run's rows are loaded by the transaction that marks it succeeded, and a re-run that fails
-- leaves rows and status alone.
-- label       the joint label: the argmax of the item's joint posterior, the product of its modalities'
--             refined posteriors (METHOD.md step 8), each modality weighted (pairwise_core/joint.py).
--             An item whose other modalities were rejected uses the ones it has.
-- confidence  the joint posterior probability of the label. Calibrated: of the items with confidence
--             about p, a share about p is right (runs.details.calibration says how it was fitted: 'gold',
--             out of fold against the catalog's labels, or 'label-free'); agreement_metrics.gold_ece
--             measures it when the run has a gold column.
-- status      what the modalities say, for a downstream system to act on:
--               agreed           every modality of the item (two or more) gives the joint label itself;
--               split            the modalities' own refined labels differ: the joint posterior decided;
--               single_modality  only one modality labelled the item: the run has one, or the item's
--                                others were rejected;
--             runs from before the joint label (schema version < 3) keep their old statuses (agreed,
--             single_modality, majority, by_margin, undecided) and a NULL confidence.
--             Auto-accept by confidence (e.g. >= 0.9), send 'split' and low-confidence items to review.
-- agreeing_modalities  how many modalities' own refined labels are the joint label; n_modalities: how many
--             modalities labelled the item.
-- parent_label, parent_confidence  when the classes table has a parent column: the parent whose children's
--             joint probabilities sum highest, and its confidence. It may differ from the parent of label: an
--             item split between two siblings is surely in their parent. The confidence is calibrated when
--             the run's calibration is 'gold': the sums P sharpened by a power fitted out of fold on the gold
--             labels' parents, P^a renormalized (pairwise_core/hierarchy.py; the label is unchanged);
--             label-free, or with --graph-k, it is the plain sum, which is not calibrated (underconfident on
--             the WordNet dev catalogs: docs/results.md). At most 1. NULL without parents (schema version 7).
-- Re-created by every write connection (tasks/store.py), after the migrations.
CREATE OR REPLACE VIEW consensus_labels AS
SELECT j.run_id, j.item_id, j.label, j.confidence, j.status, j.agreeing_modalities, j.n_modalities,
       j.parent_label, j.parent_confidence
FROM joint_labels AS j
WHERE j.run_id IN (SELECT run_id FROM runs WHERE status = 'succeeded')
