-- Schema version 9: the review weighs in the kNN graph's vote (issue 23). With --graph-k, each item's
-- neighbours' given labels, weighted by the graph's edges, are one more expert in the product of experts of a
-- route that reads the labels ('label-aware+neighbours', 'both+neighbours'). NULL for runs without the graph,
-- for the zero-shot route, and for runs made before this version.
-- neighbours_p_given  the given label's share of the neighbours' vote, with a pseudo-count per class
-- neighbours_label    the label most of the weight of its neighbours carry (NULL when none has a given label)
ALTER TABLE annotation_issues ADD COLUMN neighbours_p_given DOUBLE;
ALTER TABLE annotation_issues ADD COLUMN neighbours_label VARCHAR;
