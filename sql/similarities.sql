-- Every candidate pair with both similarities: the CLIP similarity mining measured and the
-- DINOv2 similarity of the two images' vectors. `dino_vectors` is every DINOv2 vector of the
-- run root: the `dino` column of shards embedded with both encoders and the `dino` table
-- written by `blindspot dino`. Candidates without a vector on either side are left out.
--
-- The vectors are written first in each join on purpose: a hash join builds on its left
-- side, and the vectors are the small side (a filter unit's are the keys its candidates
-- name), so the candidates stream through both joins and only the similarity leaves them.
SELECT
    c.a,
    c.b,
    da.uri AS a_uri,
    db.uri AS b_uri,
    c.clip_sim,
    cosine_sim(da.dino, db.dino) AS dino_sim
FROM dino_vectors AS db
JOIN (dino_vectors AS da JOIN candidates AS c ON da.key = c.a) ON db.key = c.b
