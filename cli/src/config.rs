//! Where the CLI keeps its token: `<config dir>/bulk-import/credentials.json`
//! (`$XDG_CONFIG_HOME` or `~/.config` on Linux), the file mode 0600 and its directory 0700.
//!
//! Beside it, `devices.json` (also 0600) keeps the API's device cookie (`bi_device`) for each
//! URL and email that logged in here, and `login` sends it back: a client presenting the
//! account's device cookie is counted apart from everyone else's attempts (the API's login
//! limiting, docs/api.md), so wrong passwords tried elsewhere do not lock the CLI user out.
//! `logout` forgets the token and keeps the device cookie, as a browser keeps its cookies.

use crate::failure::Failure;
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    io::{BufRead, Write},
    path::{Path, PathBuf},
};

pub const DEFAULT_URL: &str = "http://127.0.0.1:8000";

#[derive(Serialize, Deserialize)]
pub struct Saved {
    pub url: String,
    pub email: String,
    pub token: String,
}

fn dir() -> Result<PathBuf, Failure> {
    let dir = dirs::config_dir()
        .ok_or_else(|| Failure::usage("no config directory (set HOME or XDG_CONFIG_HOME)"))?;
    Ok(dir.join("bulk-import"))
}

fn path() -> Result<PathBuf, Failure> {
    Ok(dir()?.join("credentials.json"))
}

fn devices_path() -> Result<PathBuf, Failure> {
    Ok(dir()?.join("devices.json"))
}

/// The device cookies: `"<url> <email>"` → the cookie's `name=value`.
type Devices = BTreeMap<String, String>;

fn device_key(url: &str, email: &str) -> String {
    format!("{url} {}", email.trim().to_lowercase())
}

fn load_devices() -> Devices {
    devices_path()
        .ok()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// The device cookie saved for this URL and email (`bi_device=…`), if any.
pub fn device(url: &str, email: &str) -> Option<String> {
    load_devices().remove(&device_key(url, email))
}

/// Keeps the device cookie a login answered for this URL and email.
pub fn save_device(url: &str, email: &str, cookie: &str) -> Result<(), Failure> {
    let mut devices = load_devices();
    devices.insert(device_key(url, email), cookie.to_string());
    let text = serde_json::to_string_pretty(&devices).expect("serialisable");
    write_private(&devices_path()?, &text)
        .map_err(|e| Failure::usage(format!("cannot save the device cookie: {e}")))
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
        Some(s) => Err(Failure::authentication(format!(
            "the saved token is for {} and not {url}: run `bulk-import login --url {url} --email …`",
            s.url
        ))),
        None => Err(Failure::authentication(
            "not logged in: run `bulk-import login --email …` (or set BULK_IMPORT_TOKEN)",
        )),
    }
}

/// With `from_stdin`, the first line of standard input (without its line break); else
/// `BULK_IMPORT_PASSWORD`, else a prompt on the terminal (twice when `confirm`).
pub fn password(from_stdin: bool, confirm: bool) -> Result<String, Failure> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Failure::usage(format!("cannot read the password from stdin: {e}")))?;
        let password = line.strip_suffix('\n').unwrap_or(&line);
        let password = password.strip_suffix('\r').unwrap_or(password);
        if password.is_empty() {
            return Err(Failure::usage(
                "--password-stdin: standard input has no password",
            ));
        }
        return Ok(password.to_string());
    }
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
    let path = path()?;
    let text = serde_json::to_string_pretty(&Saved {
        url: url.to_string(),
        email: email.to_string(),
        token: token.to_string(),
    })
    .expect("serialisable");
    write_private(&path, &text)
        .map_err(|e| Failure::usage(format!("cannot save the token: {e}")))?;
    Ok(path)
}

/// Writes `text` to `path`, mode 0600, in a directory of mode 0700. Written to a fresh 0600
/// file and renamed over the old one: the secret is never readable by others, not even for a
/// moment, whatever mode an older file had.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let dir = path.parent().expect("a parent");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

pub fn forget() -> Result<(), Failure> {
    match std::fs::remove_file(path()?) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Failure::usage(format!("cannot remove the token: {e}"))),
    }
}
