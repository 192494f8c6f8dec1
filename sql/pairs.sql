-- The CLIP-blind pairs: candidates (CLIP similarity above the candidates threshold) whose
-- DINOv2 similarity is below $1. `similarities` is `sql/similarities.sql`: every candidate
-- with both similarities. $2 is the run id stamped on every row.
SELECT a, b, a_uri, b_uri, clip_sim, dino_sim, $2 AS run_id
FROM similarities
WHERE dino_sim < $1
ORDER BY a, b
