-- One row per pair of near-duplicate groups: every CLIP-blind pair between a member of one
-- group and a member of the other, counted, with the most blind member pair (lowest DINOv2
-- similarity, ties by key) as the representative. An image in no group is a group of one
-- (`a_group` null, `a_size` 1). `pairs` carries each side's group (`a_group`, `a_group_size`,
-- from the `groups` table); `a` < `b` in every row. An aggregate per pair of groups, so its
-- memory grows with the pairs of groups, not with the pairs.
WITH sides AS (
    SELECT
        p.*,
        COALESCE('g' || CAST(p.a_group AS VARCHAR), 'k' || p.a) AS side_a,
        COALESCE('g' || CAST(p.b_group AS VARCHAR), 'k' || p.b) AS side_b
    FROM pairs AS p
)
SELECT
    first_value(a ORDER BY dino_sim ASC NULLS LAST, a, b) AS a,
    first_value(b ORDER BY dino_sim ASC NULLS LAST, a, b) AS b,
    first_value(a_uri ORDER BY dino_sim ASC NULLS LAST, a, b) AS a_uri,
    first_value(b_uri ORDER BY dino_sim ASC NULLS LAST, a, b) AS b_uri,
    first_value(clip_sim ORDER BY dino_sim ASC NULLS LAST, a, b) AS clip_sim,
    first_value(dino_sim ORDER BY dino_sim ASC NULLS LAST, a, b) AS dino_sim,
    first_value(a_group ORDER BY dino_sim ASC NULLS LAST, a, b) AS a_group,
    first_value(b_group ORDER BY dino_sim ASC NULLS LAST, a, b) AS b_group,
    first_value(a_group_size ORDER BY dino_sim ASC NULLS LAST, a, b) AS a_size,
    first_value(b_group_size ORDER BY dino_sim ASC NULLS LAST, a, b) AS b_size,
    count(*) AS member_pairs
FROM sides
GROUP BY least(side_a, side_b), greatest(side_a, side_b)
