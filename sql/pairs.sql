-- The CLIP-blind pairs: candidates (CLIP similarity above the candidates threshold) whose
-- DINOv2 similarity is below $1. $2 is the run id stamped on every row. `dino_vectors` is
-- every DINOv2 vector of the run root: the `dino` column of shards embedded with both
-- encoders and the `dino` table written by `blindspot dino`.
SELECT
    c.a,
    c.b,
    da.uri AS a_uri,
    db.uri AS b_uri,
    c.clip_sim,
    cosine_sim(da.dino, db.dino) AS dino_sim,
    $2 AS run_id
FROM candidates AS c
JOIN dino_vectors AS da ON da.key = c.a
JOIN dino_vectors AS db ON db.key = c.b
WHERE cosine_sim(da.dino, db.dino) < $1
ORDER BY c.a, c.b
