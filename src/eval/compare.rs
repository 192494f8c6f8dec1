//! `blindspot eval compare`: is model A better than model B on the same pairs, or is the
//! difference noise? Pair accuracy is compared on the pairs both answered, overall and per
//! pattern, with a paired bootstrap interval of the difference (the same resampled pairs for
//! both models) and McNemar's exact test on the pairs only one model got right. With MMVP's
//! 150 pairs a difference of a few points is well inside the noise; this says so in numbers.

use std::collections::BTreeMap;

use serde::Serialize;

use super::stats::{percentile, Bootstrap};
use crate::error::{Error, Result};
use crate::sql;
use crate::storage::Location;

/// One row of a comparison: a pattern (`all` overall).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CompareRow {
    /// The pattern, or `all`.
    pub pattern: String,
    /// Pairs both models answered.
    pub pairs: usize,
    /// A's pair accuracy (%).
    pub a_accuracy: f64,
    /// B's pair accuracy (%).
    pub b_accuracy: f64,
    /// A minus B, in points.
    pub difference: f64,
    /// The paired bootstrap interval of the difference (None without resamples).
    pub interval: Option<(f64, f64)>,
    /// Pairs only A got right.
    pub only_a: u64,
    /// Pairs only B got right.
    pub only_b: u64,
    /// Percent of pairs both got right: for a model against its `[swapped]` run, the
    /// debiased pair accuracy (a pair counts only when right in both orders).
    pub both_accuracy: f64,
    /// McNemar's exact two-sided p on those discordant pairs.
    pub mcnemar_p: f64,
}

/// What a comparison found.
#[derive(Clone, Debug, Serialize)]
pub struct CompareSummary {
    /// The benchmark compared on.
    pub benchmark: String,
    /// Model A.
    pub a: String,
    /// Model B.
    pub b: String,
    /// How intervals were computed.
    pub interval: String,
    /// Overall first, then each pattern.
    pub rows: Vec<CompareRow>,
}

/// McNemar's exact test: the two-sided binomial p of `b` successes in `b + c` fair trials
/// (1 when there are no discordant pairs).
pub fn mcnemar_exact(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    // sum_{i<=k} C(n, i) / 2^n, in logs so that large n does not overflow.
    let ln_choose = |i: u64| ln_factorial(n) - ln_factorial(i) - ln_factorial(n - i);
    let tail: f64 = (0..=k)
        .map(|i| (ln_choose(i) - n as f64 * std::f64::consts::LN_2).exp())
        .sum();
    (2.0 * tail).min(1.0)
}

fn ln_factorial(n: u64) -> f64 {
    (1..=n).map(|i| (i as f64).ln()).sum()
}

/// The comparison of `(a, b)` pair outcomes (right or not): accuracies, the paired bootstrap
/// interval of the difference and McNemar's p.
pub fn compare_pairs(pattern: &str, outcomes: &[(bool, bool)], boot: &Bootstrap) -> CompareRow {
    let n = outcomes.len();
    let pct = |k: usize| 100.0 * k as f64 / n.max(1) as f64;
    let a = outcomes.iter().filter(|o| o.0).count();
    let b = outcomes.iter().filter(|o| o.1).count();
    let only_a = outcomes.iter().filter(|o| o.0 && !o.1).count() as u64;
    let only_b = outcomes.iter().filter(|o| !o.0 && o.1).count() as u64;
    let interval = (n > 0 && boot.resamples > 0).then(|| {
        let mut rng = crate::rng::Rng(boot.seed);
        let mut diffs: Vec<f64> = (0..boot.resamples)
            .map(|_| {
                let mut d = 0i64;
                for _ in 0..n {
                    let (x, y) = outcomes[rng.below(n as u64) as usize];
                    d += x as i64 - y as i64;
                }
                100.0 * d as f64 / n as f64
            })
            .collect();
        diffs.sort_by(f64::total_cmp);
        let tail = (1.0 - boot.level) / 2.0;
        (percentile(&diffs, tail), percentile(&diffs, 1.0 - tail))
    });
    CompareRow {
        pattern: pattern.to_string(),
        pairs: n,
        a_accuracy: pct(a),
        b_accuracy: pct(b),
        difference: pct(a) - pct(b),
        interval,
        only_a,
        only_b,
        both_accuracy: pct(outcomes.iter().filter(|o| o.0 && o.1).count()),
        mcnemar_p: mcnemar_exact(only_a, only_b),
    }
}

/// A pair's pattern and whether A and B got it right (None: not answered).
type Outcomes = (String, Option<bool>, Option<bool>);

/// Each pair's pattern and outcomes for `a` and `b` (on `benchmark` when given), and how many
/// pairs every model in the root answered.
async fn outcomes(
    root: &Location,
    a: &str,
    b: &str,
    benchmark: Option<&str>,
) -> Result<(BTreeMap<(String, u32), Outcomes>, BTreeMap<String, usize>)> {
    let (ctx, tables) = sql::session(root).await?;
    if !tables.iter().any(|t| t == "answers") {
        return Err(Error::Usage(format!(
            "{} has no evaluations to compare; run `blindspot eval mllm` for both models first",
            root.url
        )));
    }
    let q = "SELECT benchmark, model, pair, min(pattern) AS pattern, bool_and(correct) AS right \
             FROM answers WHERE kind = 'mllm' GROUP BY benchmark, model, pair";
    let batches = sql::collect(sql::query(&ctx, &tables, q).await?).await?;
    let mut by_pair: BTreeMap<(String, u32), Outcomes> = BTreeMap::new();
    let mut models: BTreeMap<String, usize> = BTreeMap::new();
    for batch in &batches {
        let s = |n: &str| crate::table::io::strings(batch, n);
        let (bench, model, pattern) = (s("benchmark")?, s("model")?, s("pattern")?);
        let pair = crate::table::io::cast_batch(
            batch,
            &std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
                arrow::datatypes::Field::new("pair", arrow::datatypes::DataType::Int64, true),
                arrow::datatypes::Field::new("right", arrow::datatypes::DataType::Boolean, true),
            ])),
        )?;
        use arrow::array::{Array, AsArray};
        let pairs = pair.column(0).as_primitive::<arrow::datatypes::Int64Type>();
        let right = pair.column(1).as_boolean();
        for i in 0..batch.num_rows() {
            let m = model.value(i);
            *models.entry(m.to_string()).or_default() += 1;
            if benchmark.is_some_and(|want| want != bench.value(i)) || (m != a && m != b) {
                continue;
            }
            let entry = by_pair
                .entry((bench.value(i).to_string(), pairs.value(i) as u32))
                .or_insert_with(|| (pattern.value(i).to_string(), None, None));
            let ok = right.is_valid(i) && right.value(i);
            match m == a {
                true => entry.1 = Some(ok),
                false => entry.2 = Some(ok),
            }
        }
    }
    Ok((by_pair, models))
}

/// Compares models `a` and `b` on `benchmark` (the one both answered when `None`) from the
/// `answers` of `root`: a pair is right when all its items are.
pub async fn compare(
    root: &Location,
    a: &str,
    b: &str,
    benchmark: Option<&str>,
    boot: &Bootstrap,
) -> Result<CompareSummary> {
    let (by_pair, models) = outcomes(root, a, b, benchmark).await?;
    for m in [a, b] {
        if !models.contains_key(m) {
            let known: Vec<&String> = models.keys().collect();
            return Err(Error::Usage(format!(
                "{} has no MLLM answers of model {m:?} (models: {known:?})",
                root.url
            )));
        }
    }
    let both: Vec<(&(String, u32), String, bool, bool)> = by_pair
        .iter()
        .filter_map(|(k, (p, x, y))| Some((k, p.clone(), (*x)?, (*y)?)))
        .collect();
    let benches: std::collections::BTreeSet<&str> =
        both.iter().map(|(k, ..)| k.0.as_str()).collect();
    let bench = match benches.len() {
        0 => {
            return Err(Error::Usage(format!(
                "{a:?} and {b:?} answered no pair in common{}; evaluate both on one benchmark",
                benchmark.map_or(String::new(), |b| format!(" on {b:?}"))
            )))
        }
        1 => benches.into_iter().next().unwrap_or_default().to_string(),
        _ => {
            return Err(Error::Usage(format!(
                "{a:?} and {b:?} both answered several benchmarks ({benches:?}); pick one with --benchmark"
            )))
        }
    };
    let mut rows = vec![compare_pairs(
        "all",
        &both.iter().map(|x| (x.2, x.3)).collect::<Vec<_>>(),
        boot,
    )];
    let mut patterns: BTreeMap<&str, Vec<(bool, bool)>> = BTreeMap::new();
    for (_, p, x, y) in &both {
        patterns.entry(p.as_str()).or_default().push((*x, *y));
    }
    rows.extend(patterns.iter().map(|(p, o)| compare_pairs(p, o, boot)));
    Ok(CompareSummary {
        benchmark: bench,
        a: a.to_string(),
        b: b.to_string(),
        interval: boot.describe(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcnemar_is_the_exact_binomial_tail() {
        // b = 1, c = 5: 2 * (C(6,0) + C(6,1)) / 2^6 = 2 * 7 / 64.
        assert!((mcnemar_exact(1, 5) - 14.0 / 64.0).abs() < 1e-12);
        assert!((mcnemar_exact(5, 1) - 14.0 / 64.0).abs() < 1e-12);
        // b = 0, c = 10: 2 / 1024.
        assert!((mcnemar_exact(0, 10) - 2.0 / 1024.0).abs() < 1e-12);
        // Balanced discordance is no evidence at all.
        assert_eq!(mcnemar_exact(3, 3), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
    }

    #[test]
    fn the_difference_and_its_paired_interval() {
        // 10 pairs: A right on 7, B on 5; A alone on 3, B alone on 1.
        let mut o = vec![(true, true); 4];
        o.extend([(true, false); 3]);
        o.extend([(false, true); 1]);
        o.extend([(false, false); 2]);
        let boot = Bootstrap::default();
        let r = compare_pairs("all", &o, &boot);
        assert_eq!(
            (r.a_accuracy, r.b_accuracy, r.difference),
            (70.0, 50.0, 20.0)
        );
        assert_eq!((r.only_a, r.only_b), (3, 1));
        assert!((r.mcnemar_p - 2.0 * 5.0 / 16.0).abs() < 1e-12);
        let (lo, hi) = r.interval.unwrap();
        assert!(
            lo < 20.0 && 20.0 < hi && lo >= -100.0 && hi <= 100.0,
            "{lo} {hi}"
        );
        // Agreeing pairs move nothing: the difference's interval depends on discordant ones.
        let none = compare_pairs("all", &[(true, true), (false, false)], &boot);
        assert_eq!(none.interval, Some((0.0, 0.0)));
    }
}
