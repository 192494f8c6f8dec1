-- The mined pairs in the order `blindspot annotate` exports them: the most CLIP-blind (lowest
-- DINOv2 similarity) first, ties by key so the sheet is the same on every run. The caller
-- takes the first N rows (DataFusion keeps only those N while sorting).
SELECT a, b, a_uri, b_uri, clip_sim, dino_sim
FROM pairs
ORDER BY dino_sim ASC NULLS LAST, a, b
