//! Did-you-mean: the known setting closest to a misspelt one, by edit distance.

use super::catalog::{KNOWN_SETTINGS, SECTION};

pub(super) fn closest_known(path_lower: &str) -> Option<String> {
    let candidates = KNOWN_SETTINGS.iter().map(|s| s.path.to_owned()).chain(
        KNOWN_SETTINGS
            .iter()
            .filter(|s| {
                s.path.starts_with("database:")
                    || s.path.starts_with("certificate:")
                    || s.path.starts_with("rsaKey:")
            })
            .map(|s| format!("transferTo:{}", s.path)),
    );
    candidates
        .map(|c| (edit_distance(&c.to_ascii_lowercase(), path_lower), c))
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!("{SECTION}:{c}"))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            previous = current;
        }
    }
    row[b.len()]
}
