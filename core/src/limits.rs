//! Abuse limits (docs/reliability.md, Abuse): every resource a client can make the API spend
//! has a bound, and each bound is a setting with its default declared in `vars::VARS`
//! (documented in docs/configuration.md, Limits). Read from the environment with the other
//! settings; kept apart from them so that the rest of `settings.rs` can change without
//! touching these.

use crate::vars::ConfigError;
use ipnet::IpNet;
use std::{net::IpAddr, str::FromStr, time::Duration};

#[derive(Debug, Clone)]
pub struct Limits {
    /// `TRUSTED_PROXIES`: comma-separated CIDRs (or addresses) of proxies whose
    /// `Forwarded` / `X-Forwarded-For` headers are believed. Empty (the default): the peer
    /// address is the client.
    pub trusted_proxies: Vec<IpNet>,
    /// `LOGIN_WINDOW_SECONDS`: the window of the login counters below.
    pub login_window: Duration,
    /// `LOGIN_MAX_PER_EMAIL`: attempts on one email from clients without its device
    /// cookie, and attempts with one device cookie, per window.
    pub login_max_per_email: u64,
    /// `LOGIN_MAX_EMAILS_PER_ADDR`: distinct emails with a failed login from one client
    /// address per window, past which that address needs a device cookie to log in.
    pub login_max_emails_per_addr: u64,
    /// `DEVICE_COOKIE_TTL_SECONDS`: lifetime of a device cookie.
    pub device_cookie_ttl: Duration,
    /// `REGISTER_MAX_PER_ADDR` registrations per client address per
    /// `REGISTER_WINDOW_SECONDS`.
    pub register_max_per_addr: u64,
    pub register_window: Duration,
    /// `HASH_CONCURRENCY`: password hashes computed at once (19 MiB each).
    pub hash_concurrency: usize,
    /// `HASH_QUEUE_TIMEOUT_SECONDS`: longest wait for a hashing slot before 503.
    pub hash_queue_timeout: Duration,
    /// `UPLOAD_HEAD_MAX_BYTES`: bytes of a multipart upload before the file's data
    /// (preamble, part headers, other fields).
    pub upload_head_max_bytes: u64,
    /// `UPLOAD_MAX_PARTS`: parts read before the `file` part.
    pub upload_max_parts: usize,
    /// `UPLOADS_MAX_PER_USER`: uploads of one user streaming at once (per API process).
    pub uploads_max_per_user: usize,
    /// `UPLOADS_MAX_CONCURRENT`: uploads streaming at once in one API process.
    pub uploads_max_concurrent: usize,
    /// `JOBS_MAX_UNFINISHED_PER_USER`: a user's jobs not yet done or failed.
    pub jobs_max_unfinished_per_user: i64,
    /// `EVENTS_MAX_PER_USER`: event streams of one user open at once (per API process).
    pub events_max_per_user: usize,
    /// `EVENTS_MAX_CONCURRENT`: event streams open at once in one API process.
    pub events_max_concurrent: usize,
    /// `METRICS_BIND_ADDR`: when set, `/metrics` is served only there (not on `BIND_ADDR`).
    pub metrics_bind_addr: Option<String>,
    /// `JSON_BODY_MAX_BYTES`: the largest request body of every route but the upload (JSON
    /// bodies of a few hundred bytes; routes without a body take none at all).
    pub json_body_max_bytes: u64,
    /// `REQUEST_TIMEOUT_SECONDS`: a request's head must arrive within this time, and its body
    /// within this time of the head (every route but the upload, which has its own).
    pub request_timeout: Duration,
    /// `SEND_TIMEOUT_SECONDS`: a write to a client (a download, an export, an event) that
    /// makes no progress for this long ends the connection.
    pub send_timeout: Duration,
    /// `MAX_CONNECTIONS`: connections open at once in one API process.
    pub max_connections: usize,
    /// `MAX_CONNECTIONS_PER_ADDR`: connections (behind a trusted proxy: requests) open at
    /// once per client address (an IPv6 client's /64).
    pub max_connections_per_addr: usize,
    /// Fair shares (docs/configuration.md, Limits): the upload's rate and deadline, and what
    /// one organization may hold, create and keep.
    pub fair: FairLimits,
}

/// What keeps a handful of accounts from taking what everybody shares.
#[derive(Debug, Clone)]
pub struct FairLimits {
    /// `UPLOAD_MIN_BYTES_PER_SECOND` over each `UPLOAD_RATE_WINDOW_SECONDS`.
    pub upload_min_bytes_per_second: u64,
    pub upload_rate_window: Duration,
    /// `UPLOAD_TIMEOUT_SECONDS`: the whole upload request.
    pub upload_timeout: Duration,
    /// `UPLOADS_MAX_PER_ORG`, `UPLOADS_RESERVED`.
    pub uploads_max_per_org: usize,
    pub uploads_reserved: usize,
    /// `EVENTS_MAX_PER_ORG`, `EVENTS_RESERVED`.
    pub events_max_per_org: usize,
    pub events_reserved: usize,
    /// `JOBS_MAX_UNFINISHED_PER_ORG`.
    pub jobs_max_unfinished_per_org: i64,
    /// `JOBS_CREATED_MAX_PER_ORG` per `JOBS_CREATED_WINDOW_SECONDS`.
    pub jobs_created_max_per_org: i32,
    pub jobs_created_window: Duration,
    /// `ORG_STORAGE_QUOTA_BYTES`.
    pub org_storage_quota_bytes: u64,
}

impl FairLimits {
    fn from_lookup(lookup: Lookup) -> Result<FairLimits, ConfigError> {
        let env = crate::vars::Env::new(lookup);
        let fair = FairLimits {
            upload_min_bytes_per_second: env.parse("UPLOAD_MIN_BYTES_PER_SECOND")?,
            upload_rate_window: secs(lookup, "UPLOAD_RATE_WINDOW_SECONDS")?,
            upload_timeout: secs(lookup, "UPLOAD_TIMEOUT_SECONDS")?,
            uploads_max_per_org: positive(lookup, "UPLOADS_MAX_PER_ORG")?,
            uploads_reserved: env.parse("UPLOADS_RESERVED")?,
            events_max_per_org: positive(lookup, "EVENTS_MAX_PER_ORG")?,
            events_reserved: env.parse("EVENTS_RESERVED")?,
            jobs_max_unfinished_per_org: positive(lookup, "JOBS_MAX_UNFINISHED_PER_ORG")?,
            jobs_created_max_per_org: positive(lookup, "JOBS_CREATED_MAX_PER_ORG")?,
            jobs_created_window: secs(lookup, "JOBS_CREATED_WINDOW_SECONDS")?,
            org_storage_quota_bytes: positive(lookup, "ORG_STORAGE_QUOTA_BYTES")?,
        };
        Ok(fair)
    }
}

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Through the one settings layer: each variable is declared in `vars::VARS`.
fn get(lookup: Lookup, var: &str) -> Option<String> {
    crate::vars::Env::new(lookup).get(var)
}

/// Greater than zero; unset: the default declared in `vars::VARS`.
fn positive<T>(lookup: Lookup, var: &'static str) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + Default,
    T::Err: std::fmt::Display,
{
    let v: T = crate::vars::Env::new(lookup).parse(var)?;
    if v <= T::default() {
        return Err(ConfigError {
            var,
            reason: "must be greater than zero".into(),
        });
    }
    Ok(v)
}

fn secs(lookup: Lookup, var: &'static str) -> Result<Duration, ConfigError> {
    positive(lookup, var).map(Duration::from_secs)
}

/// `10.0.0.0/8, 192.168.1.7` → networks; a bare address is a /32 (or /128).
pub fn parse_cidrs(raw: &str) -> Result<Vec<IpNet>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{s:?} is not an address or CIDR"))
        })
        .collect()
}

impl Limits {
    pub fn from_lookup(lookup: Lookup) -> Result<Limits, ConfigError> {
        let trusted_proxies = match get(lookup, "TRUSTED_PROXIES") {
            None => Vec::new(),
            Some(raw) => parse_cidrs(&raw).map_err(|reason| ConfigError {
                var: "TRUSTED_PROXIES",
                reason,
            })?,
        };
        Ok(Limits {
            trusted_proxies,
            login_window: secs(lookup, "LOGIN_WINDOW_SECONDS")?,
            login_max_per_email: positive(lookup, "LOGIN_MAX_PER_EMAIL")?,
            login_max_emails_per_addr: positive(lookup, "LOGIN_MAX_EMAILS_PER_ADDR")?,
            device_cookie_ttl: secs(lookup, "DEVICE_COOKIE_TTL_SECONDS")?,
            register_max_per_addr: positive(lookup, "REGISTER_MAX_PER_ADDR")?,
            register_window: secs(lookup, "REGISTER_WINDOW_SECONDS")?,
            hash_concurrency: positive(lookup, "HASH_CONCURRENCY")?,
            hash_queue_timeout: secs(lookup, "HASH_QUEUE_TIMEOUT_SECONDS")?,
            upload_head_max_bytes: positive(lookup, "UPLOAD_HEAD_MAX_BYTES")?,
            upload_max_parts: positive(lookup, "UPLOAD_MAX_PARTS")?,
            uploads_max_per_user: positive(lookup, "UPLOADS_MAX_PER_USER")?,
            uploads_max_concurrent: positive(lookup, "UPLOADS_MAX_CONCURRENT")?,
            jobs_max_unfinished_per_user: positive(lookup, "JOBS_MAX_UNFINISHED_PER_USER")?,
            events_max_per_user: positive(lookup, "EVENTS_MAX_PER_USER")?,
            events_max_concurrent: positive(lookup, "EVENTS_MAX_CONCURRENT")?,
            metrics_bind_addr: get(lookup, "METRICS_BIND_ADDR"),
            json_body_max_bytes: positive(lookup, "JSON_BODY_MAX_BYTES")?,
            request_timeout: secs(lookup, "REQUEST_TIMEOUT_SECONDS")?,
            send_timeout: secs(lookup, "SEND_TIMEOUT_SECONDS")?,
            max_connections: positive(lookup, "MAX_CONNECTIONS")?,
            max_connections_per_addr: positive(lookup, "MAX_CONNECTIONS_PER_ADDR")?,
            fair: FairLimits::from_lookup(lookup)?,
        })
        .and_then(Limits::reserves_fit)
    }

    /// A reserve leaves a shared part: at most its total less one (a deployment that lowered
    /// the total below the default reserve keeps working, with a smaller reserve).
    fn reserves_fit(mut self) -> Result<Limits, ConfigError> {
        let fair = &mut self.fair;
        fair.uploads_reserved = fair
            .uploads_reserved
            .min(self.uploads_max_concurrent.saturating_sub(1));
        fair.events_reserved = fair
            .events_reserved
            .min(self.events_max_concurrent.saturating_sub(1));
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Limits, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Limits::from_lookup(&move |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_and_errors() {
        let l = load(&[]).unwrap();
        assert!(l.trusted_proxies.is_empty());
        assert_eq!(l.login_max_per_email, 5);
        assert_eq!(l.hash_concurrency, 2);
        assert_eq!(l.json_body_max_bytes, 8192);
        assert_eq!(l.request_timeout, Duration::from_secs(15));
        assert_eq!((l.max_connections, l.max_connections_per_addr), (1024, 64));
        let l = load(&[("TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1 ,::1")]).unwrap();
        assert_eq!(l.trusted_proxies.len(), 3);
        assert!(l.trusted_proxies[0].contains(&"10.1.2.3".parse::<IpAddr>().unwrap()));
        assert_eq!(
            load(&[("TRUSTED_PROXIES", "10.0.0.0/33")]).unwrap_err().var,
            "TRUSTED_PROXIES"
        );
        assert_eq!(
            load(&[("HASH_CONCURRENCY", "0")]).unwrap_err().var,
            "HASH_CONCURRENCY"
        );
        assert_eq!(
            load(&[("UPLOAD_MAX_PARTS", "many")]).unwrap_err().var,
            "UPLOAD_MAX_PARTS"
        );
        let fair = load(&[]).unwrap().fair;
        assert_eq!(fair.upload_min_bytes_per_second, 8192);
        assert_eq!(fair.uploads_reserved, 4);
        assert_eq!(fair.org_storage_quota_bytes, 10 * 1024 * 1024 * 1024);
        let small = load(&[("UPLOADS_MAX_CONCURRENT", "2")]).unwrap().fair;
        assert_eq!(small.uploads_reserved, 1, "a reserve leaves a shared slot");
        assert!(
            load(&[("UPLOAD_MIN_BYTES_PER_SECOND", "0")]).is_ok(),
            "0: no minimum"
        );
    }
}
