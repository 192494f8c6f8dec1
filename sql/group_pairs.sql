-- One row per pair of near-duplicate groups: every CLIP-blind pair between a member of one
-- group and a member of the other, counted, with the most blind member pair (lowest DINOv2
-- similarity, ties by key) as the representative. An image in no group is a group of one
-- (`a_group` null, `a_size` 1). `pairs` carries each side's group (`a_group`, `a_group_size`,
-- from the `groups` table); `a` < `b` in every row, and the two sides of a group pair are
-- ordered by their representative pair.
WITH sides AS (
    SELECT
        p.*,
        COALESCE('g' || CAST(p.a_group AS VARCHAR), 'k' || p.a) AS side_a,
        COALESCE('g' || CAST(p.b_group AS VARCHAR), 'k' || p.b) AS side_b
    FROM pairs AS p
),
ranked AS (
    SELECT
        s.*,
        row_number() OVER (
            PARTITION BY least(side_a, side_b), greatest(side_a, side_b)
            ORDER BY dino_sim ASC NULLS LAST, a, b
        ) AS rank_in_group_pair,
        count(*) OVER (PARTITION BY least(side_a, side_b), greatest(side_a, side_b)) AS member_pairs
    FROM sides AS s
)
SELECT
    a, b, a_uri, b_uri, clip_sim, dino_sim,
    a_group, b_group, a_group_size AS a_size, b_group_size AS b_size,
    member_pairs
FROM ranked
WHERE rank_in_group_pair = 1
