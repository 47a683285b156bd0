//! Did-you-mean: the known setting closest to a misspelt one, by edit distance.

use super::catalog::Catalog;
use super::setting_path::{SettingSection, SettingsGroup};

/// The setting of `catalog` (main group, or `transferTo`) at most three edits away from
/// `path_lower`, in its `appsettings.json` spelling.
pub(super) fn closest_known(catalog: &Catalog, path_lower: &str) -> Option<String> {
    let main = catalog.rows().map(|s| s.path);
    let transfer = catalog
        .rows()
        .filter(|s| {
            s.path.group() == SettingsGroup::Main && s.path.section() != SettingSection::Top
        })
        .map(|s| s.path.in_group(SettingsGroup::TransferTo));
    main.chain(transfer)
        .map(|c| {
            (
                edit_distance(&c.relative().to_ascii_lowercase(), path_lower),
                c,
            )
        })
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.setting())
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
