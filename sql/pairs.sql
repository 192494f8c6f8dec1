-- The CLIP-blind pairs: candidates (CLIP similarity above the candidates threshold) whose
-- DINOv2 similarity is below $1. $2 is the run id stamped on every row.
SELECT
    c.a,
    c.b,
    ea.uri AS a_uri,
    eb.uri AS b_uri,
    c.clip_sim,
    cosine_sim(ea.dino, eb.dino) AS dino_sim,
    $2 AS run_id
FROM candidates AS c
JOIN embeddings AS ea ON ea.key = c.a
JOIN embeddings AS eb ON eb.key = c.b
WHERE cosine_sim(ea.dino, eb.dino) < $1
ORDER BY c.a, c.b
