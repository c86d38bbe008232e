//! Policy SemverRange: the newest tag of a repository within a range, decided without a
//! client. Ranges are read by the `semver` crate (Cargo's semantics: a bare `1.2` means
//! `^1.2`), after comparators separated by spaces (`>=1.2.0 <2.0.0`, as npm writes them) are
//! joined by commas. Tags that are not semantic versions (`latest`, `v1`, `sha256-….sig`)
//! are never picked; pre-releases only when the range names one.

use semver::{Version, VersionReq};

/// Parses a range as `spec.imageUpdates.semverRange` holds it.
pub fn parse(range: &str) -> Result<VersionReq, String> {
    let mut comparators: Vec<String> = Vec::new();
    let mut operator = String::new();
    for token in range.split([' ', ',']).filter(|t| !t.is_empty()) {
        if token.chars().all(|c| "<>=~^".contains(c)) {
            operator.push_str(token);
            continue;
        }
        comparators.push(format!("{}{token}", std::mem::take(&mut operator)));
    }
    if !operator.is_empty() {
        comparators.push(operator);
    }
    VersionReq::parse(&comparators.join(", ")).map_err(|e| {
        format!("spec.imageUpdates.semverRange {range:?} is not a semver range ({e}); write comparators such as '>=1.2.0 <2.0.0' or '~1.4'")
    })
}

/// The newest tag within `range`, and its version.
pub fn newest<'a>(tags: &'a [String], range: &VersionReq) -> Option<(&'a str, Version)> {
    tags.iter()
        .filter_map(|t| Version::parse(t).ok().map(|v| (t.as_str(), v)))
        .filter(|(_, v)| range.matches(v))
        .max_by(|a, b| a.1.cmp(&b.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| t.to_string()).collect()
    }

    fn pick(range: &str, list: &[&str]) -> Option<String> {
        let tags = tags(list);
        newest(&tags, &parse(range).unwrap()).map(|(t, _)| t.to_string())
    }

    const TAGS: &[&str] = &[
        "1.2.0",
        "1.10.0",
        "1.3.0",
        "2.0.0",
        "latest",
        "v1.9.0",
        "1.4.0-rc.1",
        "sha256-ab.sig",
    ];

    #[test]
    fn the_newest_tag_in_the_range_is_picked_by_version_not_by_text() {
        assert_eq!(pick(">=1.2.0 <2.0.0", TAGS).as_deref(), Some("1.10.0"));
        assert_eq!(pick(">=1.2.0, <2.0.0", TAGS).as_deref(), Some("1.10.0"));
        assert_eq!(pick(">= 1.2.0 < 1.4", TAGS).as_deref(), Some("1.3.0"));
        assert_eq!(pick("~1.3", TAGS).as_deref(), Some("1.3.0"));
        assert_eq!(pick("^2", TAGS).as_deref(), Some("2.0.0"));
        assert_eq!(pick("1.2.*", TAGS).as_deref(), Some("1.2.0"));
        assert_eq!(pick(">=3", TAGS), None);
    }

    #[test]
    fn pre_releases_only_when_the_range_names_one() {
        assert_eq!(pick("~1.4", TAGS), None);
        assert_eq!(
            pick(">=1.4.0-rc.0, <1.5", TAGS).as_deref(),
            Some("1.4.0-rc.1")
        );
    }

    #[test]
    fn what_the_api_server_pattern_admits_parses_and_what_it_refuses_does_not() {
        let pattern = regex::Regex::new(bulkhead_crds::patterns::SEMVER_RANGE).unwrap();
        for ok in [
            ">=1.2.0 <2.0.0",
            "~1.4",
            "^1.2",
            "1.4.*",
            ">= 1.2, < 2",
            "=1.2.3",
            "*",
        ] {
            assert!(pattern.is_match(ok), "{ok}");
            parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["1.2.3.4", ">>1", "latest", "1.2 || 2", "v1.2", ""] {
            assert!(!pattern.is_match(bad), "{bad}");
        }
        let err = parse(">=").unwrap_err();
        assert!(err.contains("spec.imageUpdates.semverRange"), "{err}");
    }
}
