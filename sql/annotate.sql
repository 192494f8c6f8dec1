-- The mined pairs in the order `blindspot annotate` exports them: the most CLIP-blind (lowest
-- DINOv2 similarity) first, ties by key so the sheet is the same on every run. The caller
-- takes the first N rows (DataFusion keeps only those N while sorting). `annotated` is
-- `group_pairs` (one row per pair of near-duplicate groups, its most blind member pair: the
-- default, so a group of a thousand copies is one question, not a thousand) or `pairs`
-- (`--every-pair`, and for a decisions file, which may name any pair).
SELECT a, b, a_uri, b_uri, clip_sim, dino_sim
FROM annotated
ORDER BY dino_sim ASC NULLS LAST, a, b
