//! `org`: the organization, its members and invitations.

use crate::{
    api::{encoded, Api},
    args::{InviteRole, OrgCommand},
    failure::Failure,
    output::Out,
};
use serde_json::Value;

pub async fn run(api: &Api, command: OrgCommand, out: &Out) -> Result<u8, Failure> {
    match command {
        OrgCommand::Show => show(api, out).await,
        OrgCommand::Invite { email, role } => invite(api, email, role, out).await,
        OrgCommand::Invitations => invitations(api, out).await,
        OrgCommand::Revoke { id } => {
            api.delete(&format!("/orgs/invitations/{}", encoded(&id)))
                .await?;
            out.result(
                &format!("invitation {id} revoked"),
                &serde_json::json!({"id": id}),
            );
            Ok(0)
        }
        OrgCommand::Remove { user_id } => {
            api.delete(&format!("/orgs/members/{}", encoded(&user_id)))
                .await?;
            out.result(
                &format!("member {user_id} removed"),
                &serde_json::json!({"id": user_id}),
            );
            Ok(0)
        }
    }
}

/// The organization and its members.
async fn show(api: &Api, out: &Out) -> Result<u8, Failure> {
    let org = api.get::<Value>("/orgs/current").await?;
    let mut text = format!(
        "{} (organization {}), you are {}",
        org["name"].as_str().unwrap_or("?"),
        org["id"],
        org["role"].as_str().unwrap_or("?")
    );
    for m in org["members"].as_array().into_iter().flatten() {
        text.push_str(&format!(
            "\n  {}  {}{}",
            m["id"].as_str().unwrap_or("?"),
            m["email"].as_str().unwrap_or("?"),
            m["role"]
                .as_str()
                .map(|r| format!("  ({r})"))
                .unwrap_or_default()
        ));
    }
    out.result(&text, &org);
    Ok(0)
}

/// A new invitation, with the command that redeems it.
async fn invite(
    api: &Api,
    email: Option<String>,
    role: InviteRole,
    out: &Out,
) -> Result<u8, Failure> {
    let role = match role {
        InviteRole::Member => "member",
        InviteRole::Admin => "admin",
    };
    let inv: Value = api
        .post_body(
            "/orgs/invitations",
            &serde_json::json!({"email": email, "role": role}),
        )
        .await?;
    out.result(
        &format!(
            "invitation {} ({role}, expires {}):\n  bulk-import register --email <EMAIL> --invitation {}",
            inv["id"].as_str().unwrap_or("?"),
            inv["expires_at"].as_str().unwrap_or("?"),
            inv["token"].as_str().unwrap_or("?")
        ),
        &inv,
    );
    Ok(0)
}

/// The pending invitations.
async fn invitations(api: &Api, out: &Out) -> Result<u8, Failure> {
    let list = api.get::<Value>("/orgs/invitations").await?;
    let mut text = String::new();
    for i in list["items"].as_array().into_iter().flatten() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&format!(
            "{}  {}  {}  expires {}",
            i["id"].as_str().unwrap_or("?"),
            i["role"].as_str().unwrap_or("?"),
            i["email"].as_str().unwrap_or("(any email)"),
            i["expires_at"].as_str().unwrap_or("?")
        ));
    }
    if text.is_empty() {
        text.push_str("no pending invitations");
    }
    out.result(&text, &list);
    Ok(0)
}
