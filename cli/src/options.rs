//! What `import` asks for besides the file: the query options of `POST /imports` (and of
//! `POST /imports/preview`), and the default Idempotency-Key they are part of.

use crate::failure::Failure;
use sha2::{Digest, Sha256};
use std::path::Path;
use tokio::io::AsyncReadExt;

/// What `import` asks for besides the file.
pub struct ImportOptions {
    pub mode: &'static str,
    pub dry_run: bool,
    pub max_errors: Option<u64>,
    pub delimiter: Option<String>,
    pub encoding: Option<String>,
    pub columns: Option<String>,
}

impl ImportOptions {
    /// The query string of `POST /imports`.
    pub fn query(&self) -> String {
        let mut query = format!("/imports?mode={}{}", self.mode, self.dialect_query());
        if self.dry_run {
            query.push_str("&dry_run=true");
        }
        if let Some(n) = self.max_errors {
            query.push_str(&format!("&max_errors={n}"));
        }
        query
    }

    /// `&delimiter=…&encoding=…&columns=…`, those given: how the file is read (the query of
    /// `POST /imports/preview` too).
    pub fn dialect_query(&self) -> String {
        let mut query = String::new();
        for (name, value) in [
            ("delimiter", &self.delimiter),
            ("encoding", &self.encoding),
            ("columns", &self.columns),
        ] {
            if let Some(v) = value {
                let v: String = form_urlencoded::byte_serialize(v.as_bytes()).collect();
                query.push_str(&format!("&{name}={v}"));
            }
        }
        query
    }
}

/// The default Idempotency-Key of `import --from-key`: the same object key with the same
/// options always gives the same Idempotency-Key.
pub fn object_key(source: &str, opts: &ImportOptions) -> String {
    let mut hash = Sha256::new();
    hash.update(format!(
        "bulk-import-cli object key v1\n{source}\nmode={}\ndry_run={}\nmax_errors={:?}\n{}",
        opts.mode,
        opts.dry_run,
        opts.max_errors,
        opts.dialect_query()
    ));
    format!("cli-object-{:x}", hash.finalize())
}

/// The JSON body of `POST /imports` for an object already in storage.
pub fn object_body(source: &str, opts: &ImportOptions) -> serde_json::Value {
    serde_json::json!({
        "source": {"key": source},
        "mode": opts.mode,
        "dry_run": opts.dry_run,
        "max_errors": opts.max_errors,
        "delimiter": opts.delimiter,
        "encoding": opts.encoding,
        "columns": opts.columns,
    })
}

/// The default Idempotency-Key: the same file with the same options always gives the same
/// key, so a command run again after a network failure finds its job instead of making a
/// second one.
pub async fn default_key(file: &Path, opts: &ImportOptions) -> Result<String, Failure> {
    let mut handle = tokio::fs::File::open(file)
        .await
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?;
    let mut hash = Sha256::new();
    hash.update(format!(
        "bulk-import-cli key v1\nmode={}\ndry_run={}\nmax_errors={:?}\n",
        opts.mode, opts.dry_run, opts.max_errors
    ));
    // Only when given, so the keys of commands without them stay what they were.
    if let Some(d) = &opts.delimiter {
        hash.update(format!("delimiter={d:?}\n"));
    }
    if let Some(e) = &opts.encoding {
        hash.update(format!("encoding={e:?}\n"));
    }
    if let Some(c) = &opts.columns {
        hash.update(format!("columns={c:?}\n"));
    }
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = handle
            .read(&mut buf)
            .await
            .map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(format!("cli-{}", &hex::encode(hash.finalize())[..40]))
}
