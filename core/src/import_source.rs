//! Imports from an object already in storage: which keys an organization may import from.
//!
//! An organization has a list of key prefixes (`organizations.import_prefixes`; by default
//! `orgs/<id>/inbox/`), all under `orgs/<id>/`, so that no organization can name another's
//! objects nor the service's own areas (`uploads/`, `reports/`). Keys are relative to the
//! deployment's key prefix, in the service's bucket: no other bucket, no URL.

/// The area of the organization's own objects; every prefix it sets lies under it.
pub fn org_area(org: i32) -> String {
    format!("orgs/{org}/")
}

/// The prefixes of an organization that has not set any.
pub fn default_prefixes(org: i32) -> Vec<String> {
    vec![format!("orgs/{org}/inbox/")]
}

/// The prefixes in force: the stored ones, or the default.
pub fn effective_prefixes(org: i32, stored: Option<Vec<String>>) -> Vec<String> {
    stored.unwrap_or_else(|| default_prefixes(org))
}

/// Most prefixes an organization may set.
pub const MAX_PREFIXES: usize = 20;
const MAX_KEY_LEN: usize = 1024;

/// Why a key or prefix is malformed: empty, too long, absolute, a URL, a `.`/`..` or empty
/// segment, a backslash or a control character.
pub fn malformed(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("is empty");
    }
    if path.len() > MAX_KEY_LEN {
        return Some("is longer than 1024 bytes");
    }
    if path.starts_with('/') {
        return Some("is absolute (keys are relative to the service's bucket and prefix)");
    }
    if path.contains("://") {
        return Some("is a URL (only keys in the service's bucket are accepted)");
    }
    if path.contains('\\') || path.chars().any(char::is_control) {
        return Some("has a backslash or a control character");
    }
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len() - 1;
    for (i, s) in segments.iter().enumerate() {
        if *s == "." || *s == ".." {
            return Some("has a `.` or `..` segment");
        }
        if s.is_empty() && i != last {
            return Some("has an empty segment (`//`)");
        }
    }
    None
}

/// Checks a prefix an organization wants to set: well formed, ending in `/`, under its own
/// area.
pub fn check_prefix(org: i32, prefix: &str) -> Result<(), String> {
    if let Some(why) = malformed(prefix) {
        return Err(format!("prefix {prefix:?} {why}"));
    }
    if !prefix.ends_with('/') {
        return Err(format!("prefix {prefix:?} must end with `/`"));
    }
    let area = org_area(org);
    if !prefix.starts_with(&area) {
        return Err(format!(
            "prefix {prefix:?} is not under the organization's area {area:?}"
        ));
    }
    Ok(())
}

/// Checks a source key against the organization's prefixes: well formed, a file (not a
/// prefix), under one of them.
pub fn check_key(prefixes: &[String], key: &str) -> Result<(), String> {
    if let Some(why) = malformed(key) {
        return Err(format!("key {key:?} {why}"));
    }
    if key.ends_with('/') {
        return Err(format!("key {key:?} names a folder, not an object"));
    }
    if !prefixes.iter().any(|p| key.starts_with(p.as_str())) {
        return Err(format!(
            "key {key:?} is not under the organization's import prefixes ({})",
            prefixes.join(", ")
        ));
    }
    Ok(())
}

/// The file name a job shows for a source key: its last segment.
pub fn file_name_of(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// The organization's prefixes in force; `None` when there is no such organization.
pub async fn prefixes_of(
    db: impl sqlx::PgExecutor<'_>,
    org: i32,
) -> sqlx::Result<Option<Vec<String>>> {
    let row = sqlx::query_scalar!(
        "SELECT import_prefixes FROM organizations WHERE id = $1",
        org
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|stored| effective_prefixes(org, stored)))
}

/// Sets the organization's prefixes (checked with [`check_prefix`] by the caller).
pub async fn set_prefixes(
    db: impl sqlx::PgExecutor<'_>,
    org: i32,
    prefixes: &[String],
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE organizations SET import_prefixes = $2 WHERE id = $1",
        org,
        prefixes
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The organization's owner, to whom an import the operator creates for a hand-written
/// ImportJob is attributed; `None` when there is no such organization (or no owner).
pub async fn owner_of(db: impl sqlx::PgExecutor<'_>, org: i32) -> sqlx::Result<Option<uuid::Uuid>> {
    sqlx::query_scalar!(
        "SELECT id FROM users WHERE org_id = $1 AND role = 'owner' AND removed_at IS NULL",
        org
    )
    .fetch_optional(db)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_lie_under_a_prefix_and_be_well_formed() {
        let p = default_prefixes(7);
        assert!(check_key(&p, "orgs/7/inbox/a.csv").is_ok());
        assert!(check_key(&p, "orgs/7/inbox/2026/a.csv").is_ok());
        for bad in [
            "",
            "/orgs/7/inbox/a.csv",
            "orgs/7/inbox/../../8/inbox/a.csv",
            "orgs/7/inbox/./a.csv",
            "orgs/7/inbox//a.csv",
            "orgs/7/inbox/",
            "orgs/8/inbox/a.csv",
            "orgs/7/inboxa.csv",
            "uploads/x/y.csv",
            "s3://bucket/orgs/7/inbox/a.csv",
            "orgs/7/inbox/a\\b.csv",
        ] {
            assert!(check_key(&p, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefixes_lie_under_the_organizations_area() {
        assert!(check_prefix(7, "orgs/7/exports/").is_ok());
        for bad in [
            "orgs/7/exports",
            "orgs/8/inbox/",
            "orgs/7/../8/",
            "uploads/",
            "reports/",
            "",
            "/orgs/7/",
            "orgs/70/",
        ] {
            assert!(check_prefix(7, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_file_name_is_the_last_segment() {
        assert_eq!(file_name_of("orgs/1/inbox/a/b.csv"), "b.csv");
        assert_eq!(file_name_of("b.csv"), "b.csv");
    }
}
