//! Correlation statistics for comparing per-pattern scores: how closely a vision-language
//! model's weak patterns track the weak patterns of the CLIP encoders it is built on, and
//! how far an accuracy measured on a few pairs can be trusted (bootstrap intervals).

pub use crate::table::records::Bootstrap;

/// Pearson's product-moment correlation, or `None` when it is undefined for the input.
///
/// Undefined means: lengths differ, fewer than three pairs, a non-finite value, or a side with
/// zero variance.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 3 {
        return None;
    }
    if !x.iter().chain(y).all(|v| v.is_finite()) {
        return None;
    }
    // A constant side is tested exactly: its centred sum of squares need not come out as 0.0
    // (the mean of [0.1; 3] is not exactly 0.1), and a rounding residue would yield a bogus r.
    if is_constant(x) || is_constant(y) {
        return None;
    }
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx <= 0.0 || syy <= 0.0 {
        return None;
    }
    let r = sxy / (sxx.sqrt() * syy.sqrt());
    // Rounding can push perfectly correlated data a hair past ±1.
    Some(r.clamp(-1.0, 1.0))
}

/// 1-based ranks of `x`, tied values sharing the average of the ranks they span.
pub fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut out = vec![0.0; x.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && x[order[end]] == x[order[start]] {
            end += 1;
        }
        // Positions start..end hold ranks start+1..=end; their average is the midpoint.
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            out[i] = rank;
        }
        start = end;
    }
    out
}

/// Spearman's rank correlation: Pearson of the average-tie ranks, as `scipy.stats.spearmanr`.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || !x.iter().chain(y).all(|v| v.is_finite()) {
        return None;
    }
    pearson(&ranks(x), &ranks(y))
}

/// Element-wise mean of equal-length rows, or `None` when there are none or lengths differ.
pub fn mean_rows(rows: &[&[f64]]) -> Option<Vec<f64>> {
    let first = rows.first()?;
    if rows.iter().any(|r| r.len() != first.len()) {
        return None;
    }
    let n = rows.len() as f64;
    let mean = (0..first.len())
        .map(|i| rows.iter().map(|r| r[i]).sum::<f64>() / n)
        .collect();
    Some(mean)
}

fn is_constant(v: &[f64]) -> bool {
    v.iter().all(|&a| a == v[0])
}

impl Bootstrap {
    /// The method in words, as the tables and the report state it.
    pub fn describe(&self) -> String {
        format!(
            "{:.0}% percentile bootstrap over pairs, {} resamples, seed {}",
            self.level * 100.0,
            self.resamples,
            self.seed
        )
    }
}

/// Percentile-bootstrap intervals (percent) of pair and question accuracy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AccuracyIntervals {
    /// Pair accuracy (all questions of a pair right), low and high.
    pub pair: (f64, f64),
    /// Question accuracy, low and high.
    pub question: (f64, f64),
}

/// Resamples `pairs` (each: questions right, questions asked) with replacement
/// `b.resamples` times and returns the percentile intervals of pair and question accuracy.
/// `None` without pairs or resamples.
pub fn bootstrap_accuracy(pairs: &[(u32, u32)], b: &Bootstrap) -> Option<AccuracyIntervals> {
    if pairs.is_empty() || b.resamples == 0 {
        return None;
    }
    let mut rng = crate::rng::Rng(b.seed);
    let n = pairs.len() as u64;
    let mut pair_acc = Vec::with_capacity(b.resamples as usize);
    let mut question_acc = Vec::with_capacity(b.resamples as usize);
    for _ in 0..b.resamples {
        let (mut ok, mut right, mut asked) = (0u64, 0u64, 0u64);
        for _ in 0..n {
            let (r, a) = pairs[rng.below(n) as usize];
            ok += u64::from(a > 0 && r == a);
            right += u64::from(r);
            asked += u64::from(a);
        }
        pair_acc.push(100.0 * ok as f64 / n as f64);
        question_acc.push(if asked == 0 {
            f64::NAN
        } else {
            100.0 * right as f64 / asked as f64
        });
    }
    let tail = (1.0 - b.level) / 2.0;
    let interval = |mut v: Vec<f64>| {
        v.retain(|x| x.is_finite());
        v.sort_by(f64::total_cmp);
        (percentile(&v, tail), percentile(&v, 1.0 - tail))
    };
    Some(AccuracyIntervals {
        pair: interval(pair_acc),
        question: interval(question_acc),
    })
}

/// The percentile-bootstrap interval (percent) of a ratio over pairs: each pair gives
/// (numerator, denominator); pairs are drawn with replacement and 100 * sum num / sum den
/// recomputed. `None` without pairs, resamples or any denominator.
pub fn ratio_interval(per_pair: &[(f64, f64)], b: &Bootstrap) -> Option<(f64, f64)> {
    if per_pair.is_empty() || b.resamples == 0 || per_pair.iter().all(|p| p.1 == 0.0) {
        return None;
    }
    let mut rng = crate::rng::Rng(b.seed);
    let n = per_pair.len() as u64;
    let mut v: Vec<f64> = (0..b.resamples)
        .map(|_| {
            let (mut num, mut den) = (0.0, 0.0);
            for _ in 0..n {
                let (x, y) = per_pair[rng.below(n) as usize];
                num += x;
                den += y;
            }
            100.0 * num / den
        })
        .filter(|x: &f64| x.is_finite())
        .collect();
    v.sort_by(f64::total_cmp);
    let tail = (1.0 - b.level) / 2.0;
    Some((percentile(&v, tail), percentile(&v, 1.0 - tail)))
}

/// The `q` quantile (0..=1) of sorted values, interpolating linearly between order
/// statistics (numpy's default, `method="linear"`); NaN when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The Fisher-z interval of Pearson's r over `n` points at `level` coverage:
/// tanh(atanh(r) ± z/sqrt(n-3)); `None` below 4 points.
pub fn fisher_interval(r: f64, n: usize, level: f64) -> Option<(f64, f64)> {
    if n < 4 || !r.is_finite() {
        return None;
    }
    let z = r.clamp(-1.0, 1.0).atanh();
    let half = normal_quantile(1.0 - (1.0 - level) / 2.0) / ((n - 3) as f64).sqrt();
    Some(((z - half).tanh(), (z + half).tanh()))
}

/// The standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let low = 0.02425;
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    if p < low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -normal_quantile(1.0 - p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EPS: f64 = 1e-9;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < EPS
    }

    #[test]
    fn pearson_known_values() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert!(close(
            pearson(&x, &[2.0, 4.0, 6.0, 8.0, 10.0]).unwrap(),
            1.0
        ));
        assert!(close(
            pearson(&x, &[5.0, 4.0, 3.0, 2.0, 1.0]).unwrap(),
            -1.0
        ));
        // By hand: centred x = -2..2, centred y = [-1.8, 0.2, -0.8, 2.2, 0.2];
        // sxy = 6, sxx = 10, syy = 8.8, so r = 6 / sqrt(88).
        let y = [1.0, 3.0, 2.0, 5.0, 3.0];
        assert!(close(pearson(&x, &y).unwrap(), 6.0 / 88f64.sqrt()));
        // Uncorrelated by construction: sxy = 0.
        assert!(close(
            pearson(&[1.0, 2.0, 3.0], &[1.0, 0.0, 1.0]).unwrap(),
            0.0
        ));
    }

    #[test]
    fn pearson_degenerate_inputs() {
        assert_eq!(pearson(&[1.0, 2.0, 3.0], &[1.0, 2.0]), None);
        assert_eq!(pearson(&[1.0, 2.0], &[1.0, 2.0]), None);
        assert_eq!(pearson(&[], &[]), None);
        assert_eq!(pearson(&[0.1, 0.1, 0.1], &[1.0, 2.0, 3.0]), None);
        assert_eq!(pearson(&[1.0, 2.0, 3.0], &[7.0, 7.0, 7.0]), None);
        assert_eq!(pearson(&[1.0, f64::NAN, 3.0], &[1.0, 2.0, 3.0]), None);
        assert_eq!(pearson(&[1.0, 2.0, 3.0], &[1.0, f64::INFINITY, 3.0]), None);
    }

    #[test]
    fn ranks_plain_and_tied() {
        assert_eq!(ranks(&[]), Vec::<f64>::new());
        assert_eq!(ranks(&[30.0, 10.0, 20.0]), vec![3.0, 1.0, 2.0]);
        assert_eq!(ranks(&[10.0, 20.0, 10.0, 30.0]), vec![1.5, 3.0, 1.5, 4.0]);
        assert_eq!(ranks(&[5.0, 5.0, 5.0]), vec![2.0, 2.0, 2.0]);
        assert_eq!(
            ranks(&[2.0, 1.0, 2.0, 3.0, 2.0, 1.0]),
            vec![4.0, 1.5, 4.0, 6.0, 4.0, 1.5]
        );
    }

    #[test]
    fn spearman_known_values() {
        // Monotone but not linear: rank correlation is exactly 1.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert!(close(
            spearman(&x, &[1.0, 8.0, 27.0, 64.0, 125.0]).unwrap(),
            1.0
        ));
        // With ties, by hand: ranks x = [1, 2.5, 2.5, 4], ranks y = [1, 2, 3, 4];
        // centred: [-1.5, 0, 0, 1.5] and [-1.5, -0.5, 0.5, 1.5]; sxy = 4.5, sxx = 4.5,
        // syy = 5, so rho = 4.5 / sqrt(22.5).
        let rho = spearman(&[1.0, 2.0, 2.0, 3.0], &[10.0, 20.0, 30.0, 40.0]).unwrap();
        assert!(close(rho, 4.5 / 22.5f64.sqrt()));
    }

    #[test]
    fn spearman_degenerate_inputs() {
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[1.0, 2.0]), None);
        assert_eq!(spearman(&[1.0, 2.0], &[2.0, 1.0]), None);
        assert_eq!(spearman(&[4.0, 4.0, 4.0], &[1.0, 2.0, 3.0]), None);
        assert_eq!(spearman(&[1.0, f64::NAN, 3.0], &[1.0, 2.0, 3.0]), None);
    }

    #[test]
    fn mean_rows_shapes() {
        assert_eq!(mean_rows(&[]), None);
        assert_eq!(mean_rows(&[&[1.0, 2.0], &[1.0]]), None);
        assert_eq!(mean_rows(&[&[1.0, 2.0]]), Some(vec![1.0, 2.0]));
        assert_eq!(
            mean_rows(&[&[1.0, 2.0, 3.0], &[3.0, 4.0, 5.0]]),
            Some(vec![2.0, 3.0, 4.0])
        );
    }

    /// MMVP-VLM per-pattern scores, in the order Orientation, Presence, State, Quantity,
    /// Spatial, Color, Structural, Text, Viewpoint.
    const VIT_L_14_224: [f64; 9] = [13.3, 13.3, 20.0, 20.0, 13.3, 53.3, 20.0, 6.7, 13.3];
    const VIT_L_14_336: [f64; 9] = [0.0, 20.0, 40.0, 20.0, 6.7, 20.0, 33.3, 6.7, 33.3];
    const EVA01_VIT_G_14: [f64; 9] = [6.7, 26.7, 40.0, 6.7, 13.3, 66.7, 13.3, 13.3, 20.0];
    const DFN_VIT_H_14_224: [f64; 9] = [20.0, 26.7, 73.3, 26.7, 26.7, 66.7, 46.7, 13.3, 53.3];

    #[test]
    fn mmvp_vlm_clip_line_against_dfn() {
        let clip = mean_rows(&[&VIT_L_14_224, &VIT_L_14_336, &EVA01_VIT_G_14]).unwrap();
        let by_hand = [
            (13.3 + 0.0 + 6.7) / 3.0,   // Orientation = 6.667
            (13.3 + 20.0 + 26.7) / 3.0, // Presence = 20.0
            (20.0 + 40.0 + 40.0) / 3.0, // State = 33.333
            (20.0 + 20.0 + 6.7) / 3.0,  // Quantity = 15.567
            (13.3 + 6.7 + 13.3) / 3.0,  // Spatial = 11.1
            (53.3 + 20.0 + 66.7) / 3.0, // Color = 46.667
            (20.0 + 33.3 + 13.3) / 3.0, // Structural = 22.2
            (6.7 + 6.7 + 13.3) / 3.0,   // Text = 8.9
            (13.3 + 33.3 + 20.0) / 3.0, // Viewpoint = 22.2
        ];
        assert_eq!(clip.len(), 9);
        for (got, want) in clip.iter().zip(by_hand) {
            assert!(close(*got, want), "{got} != {want}");
        }
        assert!(close(clip[5], 46.666_666_666_666_664));

        // References computed exactly in Python (fractions.Fraction on the decimal inputs,
        // then a 50-digit decimal.Decimal square root) with the textbook formulas that
        // numpy.corrcoef and scipy.stats.spearmanr (average ranks for ties) implement;
        // numpy was not available on the machine this was written on.
        let r = pearson(&clip, &DFN_VIT_H_14_224).unwrap();
        assert!((r - 0.891_302_123_954_576_6).abs() < 1e-9, "pearson {r}");
        let rho = spearman(&clip, &DFN_VIT_H_14_224).unwrap();
        assert!(
            (rho - 0.944_757_837_636_871_2).abs() < 1e-9,
            "spearman {rho}"
        );
    }

    /// Integer-valued samples keep the variance of non-constant data well away from zero, so
    /// equalities can be checked to a tight tolerance.
    fn pair() -> impl Strategy<Value = (Vec<f64>, Vec<f64>)> {
        (3usize..40).prop_flat_map(|n| {
            (
                prop::collection::vec((-1000i32..1000).prop_map(f64::from), n),
                prop::collection::vec((-1000i32..1000).prop_map(f64::from), n),
            )
        })
    }

    proptest! {
        #[test]
        fn prop_bounded((x, y) in pair()) {
            if let Some(r) = pearson(&x, &y) {
                prop_assert!((-1.0..=1.0).contains(&r));
            }
            if let Some(r) = spearman(&x, &y) {
                prop_assert!((-1.0..=1.0).contains(&r));
            }
        }

        #[test]
        fn prop_symmetric((x, y) in pair()) {
            prop_assert_eq!(pearson(&x, &y), pearson(&y, &x));
            prop_assert_eq!(spearman(&x, &y), spearman(&y, &x));
        }

        #[test]
        fn prop_affine_invariant((x, y) in pair(), a in 0.1f64..10.0, b in -100.0f64..100.0) {
            let r = pearson(&x, &y);
            prop_assume!(r.is_some());
            let ax: Vec<f64> = x.iter().map(|v| a * v + b).collect();
            let r2 = pearson(&ax, &y).unwrap();
            prop_assert!((r.unwrap() - r2).abs() < EPS, "{:?} vs {}", r, r2);
            let rho2 = spearman(&ax, &y).unwrap();
            prop_assert!((spearman(&x, &y).unwrap() - rho2).abs() < EPS);
        }

        #[test]
        fn prop_spearman_monotone_invariant((x, y) in pair()) {
            let rho = spearman(&x, &y);
            prop_assume!(rho.is_some());
            let cubed: Vec<f64> = x.iter().map(|v| v.powi(3)).collect();
            let expd: Vec<f64> = y.iter().map(|v| (v / 300.0).exp()).collect();
            let rho2 = spearman(&cubed, &expd).unwrap();
            prop_assert!((rho.unwrap() - rho2).abs() < EPS, "{:?} vs {}", rho, rho2);
        }

        #[test]
        fn prop_self_correlation_is_one((x, _) in pair()) {
            prop_assume!(!is_constant(&x));
            prop_assert!((pearson(&x, &x).unwrap() - 1.0).abs() < EPS);
            prop_assert!((spearman(&x, &x).unwrap() - 1.0).abs() < EPS);
        }
    }

    /// The exact bootstrap distribution of the sum of `values.len()` draws with replacement
    /// from `values`: P(sum = s), by convolution. The reference the resampling must approach.
    fn exact_sum_distribution(values: &[u32]) -> Vec<f64> {
        let n = values.len();
        let top = *values.iter().max().unwrap() as usize;
        let mut p_value = vec![0.0; top + 1];
        for v in values {
            p_value[*v as usize] += 1.0 / n as f64;
        }
        let mut dist = vec![1.0];
        for _ in 0..n {
            let mut next = vec![0.0; dist.len() + top];
            for (s, p) in dist.iter().enumerate() {
                for (v, pv) in p_value.iter().enumerate() {
                    next[s + v] += p * pv;
                }
            }
            dist = next;
        }
        dist
    }

    /// The smallest sum whose cumulative probability reaches `q`.
    fn exact_quantile(dist: &[f64], q: f64) -> f64 {
        let mut cdf = 0.0;
        for (s, p) in dist.iter().enumerate() {
            cdf += p;
            if cdf >= q - 1e-12 {
                return s as f64;
            }
        }
        (dist.len() - 1) as f64
    }

    #[test]
    fn bootstrap_intervals_match_the_exact_bootstrap_distribution() {
        // 40 pairs of two questions: 22 both right, 11 one right, 7 none.
        let mut pairs = vec![(2, 2); 22];
        pairs.extend(vec![(1, 2); 11]);
        pairs.extend(vec![(0, 2); 7]);
        let b = Bootstrap {
            resamples: 20_000,
            seed: 7,
            level: 0.95,
        };
        let got = bootstrap_accuracy(&pairs, &b).unwrap();
        let n = pairs.len() as f64;
        // Pair accuracy: the count of right pairs is Binomial(40, 22/40).
        let ok: Vec<u32> = pairs.iter().map(|(r, a)| u32::from(r == a)).collect();
        let dist = exact_sum_distribution(&ok);
        // Question accuracy: the sum of 40 draws from {2, 1, 0} over 80 questions.
        let right: Vec<u32> = pairs.iter().map(|(r, _)| *r).collect();
        let qdist = exact_sum_distribution(&right);
        for (value, dist, scale, q) in [
            (got.pair.0, &dist, n, 0.025),
            (got.pair.1, &dist, n, 0.975),
            (got.question.0, &qdist, 2.0 * n, 0.025),
            (got.question.1, &qdist, 2.0 * n, 0.975),
        ] {
            // The resampled quantile lies between the exact quantiles one point either side.
            let lo = 100.0 * exact_quantile(dist, q - 0.01) / scale;
            let hi = 100.0 * exact_quantile(dist, q + 0.01) / scale;
            assert!(
                (lo..=hi).contains(&value),
                "{value} not in [{lo}, {hi}] at q={q}"
            );
        }
        assert!(got.pair.0 < 55.0 && got.pair.1 > 55.0);
        // Seeded: the same seed gives the same interval, another seed (with few resamples,
        // where the quantiles are still noisy) another.
        assert_eq!(bootstrap_accuracy(&pairs, &b), Some(got));
        let few = Bootstrap { resamples: 40, ..b };
        let draws: std::collections::BTreeSet<String> = (0..8)
            .map(|seed| {
                format!(
                    "{:?}",
                    bootstrap_accuracy(&pairs, &Bootstrap { seed, ..few })
                )
            })
            .collect();
        assert!(draws.len() > 1, "{draws:?}");
        assert!(bootstrap_accuracy(&[], &b).is_none());
        assert!(bootstrap_accuracy(&pairs, &Bootstrap { resamples: 0, ..b }).is_none());
        // Every pair right: no spread.
        let all = bootstrap_accuracy(&[(2, 2); 5], &b).unwrap();
        assert_eq!(all.pair, (100.0, 100.0));
    }

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        // numpy.percentile([1, 2, 3, 4], [0, 25, 50, 97.5, 100]) = 1, 1.75, 2.5, 3.925, 4
        for (q, want) in [
            (0.0, 1.0),
            (0.25, 1.75),
            (0.5, 2.5),
            (0.975, 3.925),
            (1.0, 4.0),
        ] {
            assert!((percentile(&v, q) - want).abs() < 1e-12, "{q}");
        }
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn fisher_intervals_match_a_reference() {
        // Reference: Python's math.atanh/tanh and statistics.NormalDist().inv_cdf(0.975).
        assert!((normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-8);
        assert!((normal_quantile(0.01) + 2.326_347_874_040_841).abs() < 1e-8);
        for (r, n, lo, hi) in [
            (0.5, 12, -0.103_641_681_237_169_42, 0.834_454_285_209_436_2),
            (-0.3, 9, -0.803_946_259_120_297_8, 0.454_718_170_290_375_03),
            (0.9, 9, 0.586_338_265_125_218_6, 0.978_977_512_228_181_2),
        ] {
            let (l, h) = fisher_interval(r, n, 0.95).unwrap();
            assert!(
                (l - lo).abs() < 1e-7 && (h - hi).abs() < 1e-7,
                "{r} {n}: {l} {h}"
            );
        }
        assert!(fisher_interval(0.5, 3, 0.95).is_none());
        assert_eq!(fisher_interval(1.0, 9, 0.95), Some((1.0, 1.0)));
    }
}
