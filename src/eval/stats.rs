//! Correlation statistics for comparing per-pattern scores: how closely a vision-language
//! model's weak patterns track the weak patterns of the CLIP encoders it is built on.

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
}
