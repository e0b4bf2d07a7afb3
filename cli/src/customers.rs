//! `customers`: list, show and export the organization's customers.

use crate::{
    api::{encoded, Api},
    args::CustomersCommand,
    failure::Failure,
    output::Out,
};
use serde_json::Value;

pub async fn run(api: &Api, command: CustomersCommand, out: &Out) -> Result<u8, Failure> {
    match command {
        CustomersCommand::List { q, limit, after } => list(api, q, limit, after, out).await,
        CustomersCommand::Get { email } => get(api, &email, out).await,
        CustomersCommand::Export { output } => {
            let bytes = api.download("/customers/export", &output).await?;
            let to_stdout = output.as_os_str() == "-";
            if !to_stdout {
                out.result(
                    &format!("{bytes} bytes written to {}", output.display()),
                    &serde_json::json!({"path": output, "bytes": bytes}),
                );
            }
            Ok(0)
        }
    }
}

/// One page of customers, with the `--after` of the next.
async fn list(
    api: &Api,
    q: Option<String>,
    limit: u32,
    after: Option<String>,
    out: &Out,
) -> Result<u8, Failure> {
    let mut path = format!("/customers?limit={limit}");
    if let Some(q) = q {
        path.push_str(&format!("&q={}", encoded(&q)));
    }
    if let Some(after) = after {
        path.push_str(&format!("&after={}", encoded(&after)));
    }
    let page = api.get::<Value>(&path).await?;
    let mut text = String::new();
    for c in page["items"].as_array().into_iter().flatten() {
        if !text.is_empty() {
            text.push('\n');
        }
        let field = |name: &str| c[name].as_str().unwrap_or("").to_string();
        text.push_str(&format!(
            "{}  {} {}  {}  {}",
            field("email"),
            field("first_name"),
            field("last_name"),
            field("phone"),
            field("city")
        ));
    }
    if text.is_empty() {
        text.push_str("no customers");
    }
    if let Some(next) = page["next_after"].as_str() {
        text.push_str(&format!("\n… more: --after {next}"));
    }
    out.result(&text, &page);
    Ok(0)
}

/// One customer, and the import that last wrote it.
async fn get(api: &Api, email: &str, out: &Out) -> Result<u8, Failure> {
    let c: Value = api.get(&format!("/customers/{}", encoded(email))).await?;
    let field = |name: &str| c[name].as_str().unwrap_or("").to_string();
    let text = format!(
        "{}\n  name: {} {}\n  phone: {}\n  city: {}\n  last written by import {} (line {})",
        field("email"),
        field("first_name"),
        field("last_name"),
        field("phone"),
        field("city"),
        c["last_import_id"].as_str().unwrap_or("?"),
        c["last_import_line"].as_i64().unwrap_or(0)
    );
    out.result(&text, &c);
    Ok(0)
}
