//! Small helpers the benchmarks share: their arguments and medians.

/// `RUNS [SIZE...]` from the command line (after `cargo bench ... --`):
/// the number of runs (default `runs`) and the sizes (default `sizes`).
pub fn runs_and_sizes(runs: usize, sizes: &[u32]) -> (usize, Vec<u32>) {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let runs = args.next().and_then(|a| a.parse().ok()).unwrap_or(runs);
    let given: Vec<u32> = args.filter_map(|a| a.parse().ok()).collect();
    let sizes = if given.is_empty() {
        sizes.to_vec()
    } else {
        given
    };
    (runs, sizes)
}

/// The median (the lower one of an even count).
pub fn median<T: PartialOrd + Copy>(values: &[T]) -> T {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    sorted[(sorted.len() - 1) / 2]
}

#[cfg(test)]
mod tests {
    #[test]
    fn medians() {
        assert_eq!(super::median(&[3, 1, 2]), 2);
        assert_eq!(super::median(&[4.0, 1.0, 3.0, 2.0]), 2.0);
    }
}
