-- Items whose pairwise label differs from the gold (current catalog) label, most confident first.
SELECT item_id, modality, gold_class, pairwise_class, pairwise_margin, base_class
FROM item_labels
WHERE run_id = $run_id AND gold_class IS NOT NULL AND pairwise_class <> gold_class
ORDER BY pairwise_margin DESC NULLS LAST, item_id, modality
