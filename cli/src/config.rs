//! Where the CLI keeps its token: `<config dir>/bulk-import/credentials.json`
//! (`$XDG_CONFIG_HOME` or `~/.config` on Linux), the file mode 0600 and its directory 0700.

use crate::api::Failure;
use serde::{Deserialize, Serialize};
use std::{io::Write, path::PathBuf};

pub const DEFAULT_URL: &str = "http://127.0.0.1:8000";

#[derive(Serialize, Deserialize)]
pub struct Saved {
    pub url: String,
    pub email: String,
    pub token: String,
}

fn path() -> Result<PathBuf, Failure> {
    let dir = dirs::config_dir()
        .ok_or_else(|| Failure::usage("no config directory (set HOME or XDG_CONFIG_HOME)"))?;
    Ok(dir.join("bulk-import").join("credentials.json"))
}

pub fn load() -> Option<Saved> {
    let text = std::fs::read_to_string(path().ok()?).ok()?;
    serde_json::from_str(&text).ok()
}

/// `--url`, else `BULK_IMPORT_URL`, else the saved URL, else [`DEFAULT_URL`]; without a
/// trailing slash.
pub fn resolve_url(flag: Option<&str>) -> Result<String, Failure> {
    let url = match flag {
        Some(u) => u.to_string(),
        None => match std::env::var("BULK_IMPORT_URL") {
            Ok(u) if !u.is_empty() => u,
            _ => load()
                .map(|s| s.url)
                .unwrap_or_else(|| DEFAULT_URL.to_string()),
        },
    };
    let url = url.trim_end_matches('/').to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Failure::usage(format!(
            "the API URL must start with http:// or https://: {url:?}"
        )));
    }
    Ok(url)
}

/// `BULK_IMPORT_TOKEN`, else the token saved for this URL.
pub fn token(url: &str) -> Result<String, Failure> {
    if let Ok(t) = std::env::var("BULK_IMPORT_TOKEN") {
        if !t.is_empty() {
            return Ok(t);
        }
    }
    match load() {
        Some(s) if s.url == url => Ok(s.token),
        Some(s) => Err(Failure::usage(format!(
            "the saved token is for {} and not {url}: run `bulk-import login --url {url} --email …`",
            s.url
        ))),
        None => Err(Failure::usage(
            "not logged in: run `bulk-import login --email …` (or set BULK_IMPORT_TOKEN)",
        )),
    }
}

/// `BULK_IMPORT_PASSWORD`, else a prompt on the terminal (twice when `confirm`).
pub fn password(confirm: bool) -> Result<String, Failure> {
    if let Ok(p) = std::env::var("BULK_IMPORT_PASSWORD") {
        return Ok(p);
    }
    let read = |prompt: &str| {
        rpassword::prompt_password(prompt).map_err(|e| {
            Failure::usage(format!(
                "cannot read a password ({e}): set BULK_IMPORT_PASSWORD"
            ))
        })
    };
    let first = read("Password: ")?;
    if confirm && read("Password again: ")? != first {
        return Err(Failure::usage("the passwords differ"));
    }
    Ok(first)
}

pub fn save(url: &str, email: &str, token: &str) -> Result<PathBuf, Failure> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let path = path()?;
    let fail = |e: std::io::Error| Failure::usage(format!("cannot save the token: {e}"));
    let dir = path.parent().expect("a parent");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(fail)?;
    let text = serde_json::to_string_pretty(&Saved {
        url: url.to_string(),
        email: email.to_string(),
        token: token.to_string(),
    })
    .expect("serialisable");
    // Written to a fresh 0600 file and renamed over the old one: the token is never readable
    // by others, not even for a moment, whatever mode an older file had.
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, &path).map_err(fail)?;
    Ok(path)
}

pub fn forget() -> Result<(), Failure> {
    match std::fs::remove_file(path()?) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Failure::usage(format!("cannot remove the token: {e}"))),
    }
}
