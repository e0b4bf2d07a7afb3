//! Accounts: users, their organizations and invitations — every statement on `users`,
//! `organizations` and `org_invitations` (docs/organizations.md). The API and
//! `bulk-import-importer submit` write accounts only through this module.
//!
//! Model: every open account belongs to one organization, with a role (`owner`, one per
//! organization; `admin`; `member`). A removed member's account is closed (`removed_at`): it
//! cannot log in and its tokens are refused, but it stays, so that the jobs it started still
//! name it. An email is unique among open accounts, so a removed member may join again (as a
//! new account). Invitations are single-use tokens of which only a SHA-256 hash is stored.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgExecutor, PgPool};
use std::{fmt, str::FromStr, time::Duration};
use uuid::Uuid;

pub type Result<T> = std::result::Result<T, sqlx::Error>;

/// An organization's id: a small integer, leading every customers key.
pub type OrgId = i32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    /// Owners and admins manage invitations and members.
    pub fn manages(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }

    /// Whether this role may remove a member holding `other`: owners anyone but an owner,
    /// admins members only.
    pub fn may_remove(self, other: Role) -> bool {
        match self {
            Role::Owner => other != Role::Owner,
            Role::Admin => other == Role::Member,
            Role::Member => false,
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            other => Err(format!(
                "unknown role {other:?}: expected owner, admin or member"
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

crate::job::text_enum!(Role);

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Organization {
    pub id: OrgId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Member {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// An open account, as a login finds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Login {
    pub id: Uuid,
    pub org_id: OrgId,
    pub password_hash: String,
}

/// Where a new account goes.
pub enum Joining<'a> {
    /// A new organization with this name, the account its owner.
    NewOrganization { name: &'a str },
    /// The organization of the invitation whose token hashes to this.
    Invitation { token_hash: &'a str },
}

#[derive(Debug)]
pub enum Registered {
    Created {
        organization: Organization,
        role: Role,
    },
    /// An open account already has this email.
    EmailTaken,
    /// Unknown, used, revoked or expired, or issued for another email.
    InvalidInvitation,
}

/// The SHA-256 (hex) of an invitation token: what is stored and looked up.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new invitation token: 244 random bits (two v4 UUIDs, from the operating system's
/// generator), in hex.
fn new_token() -> String {
    format!("inv_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

/// Creates an account (`id`, `email`, `password_hash`) in a new organization or through an
/// invitation, in one transaction: nothing is left behind when the email is taken or the
/// invitation is not valid, and an invitation is used at most once even when two sign-ups
/// race for it.
pub async fn register(
    pool: &PgPool,
    id: Uuid,
    email: &str,
    password_hash: &str,
    joining: Joining<'_>,
) -> Result<Registered> {
    let mut tx = pool.begin().await?;
    let Some((org_id, role, invitation)) = join(&mut tx, email, joining).await? else {
        return Ok(Registered::InvalidInvitation);
    };
    let inserted = sqlx::query(
        "INSERT INTO users (id, email, password_hash, org_id, role) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (email) WHERE removed_at IS NULL DO NOTHING",
    )
    .bind(id)
    .bind(email)
    .bind(password_hash)
    .bind(org_id)
    .bind(role)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        // Rolls back: the new organization or the invitation's use with it.
        return Ok(Registered::EmailTaken);
    }
    if let Some(invitation) = invitation {
        sqlx::query("UPDATE org_invitations SET used_by = $2 WHERE id = $1")
            .bind(invitation)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    let organization = organization_in(&mut tx, org_id).await?;
    tx.commit().await?;
    Ok(Registered::Created { organization, role })
}

/// The organization a sign-up joins, with its role and the invitation it uses: a new
/// organization it owns, or the one of a valid invitation, which this marks used (and locks).
/// `None` when the invitation is not valid.
async fn join(
    conn: &mut PgConnection,
    email: &str,
    joining: Joining<'_>,
) -> Result<Option<(OrgId, Role, Option<Uuid>)>> {
    Ok(Some(match joining {
        Joining::NewOrganization { name } => {
            let org: OrgId =
                sqlx::query_scalar("INSERT INTO organizations (name) VALUES ($1) RETURNING id")
                    .bind(name)
                    .fetch_one(&mut *conn)
                    .await?;
            (org, Role::Owner, None)
        }
        Joining::Invitation { token_hash } => {
            // Marks it used (and locks it): a second sign-up with the same token waits here,
            // then finds it used.
            let found: Option<(Uuid, OrgId, Role)> = sqlx::query_as(
                "UPDATE org_invitations SET used_at = now() \
                 WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL \
                   AND expires_at > now() AND (email IS NULL OR email = $2) \
                 RETURNING id, org_id, role",
            )
            .bind(token_hash)
            .bind(email)
            .fetch_optional(&mut *conn)
            .await?;
            let Some((invitation, org, role)) = found else {
                return Ok(None);
            };
            (org, role, Some(invitation))
        }
    }))
}

async fn organization_in(conn: &mut PgConnection, id: OrgId) -> Result<Organization> {
    sqlx::query_as("SELECT id, name, created_at FROM organizations WHERE id = $1")
        .bind(id)
        .fetch_one(conn)
        .await
}

/// The open account with this email, for a login.
pub async fn find_login(db: impl PgExecutor<'_>, email: &str) -> Result<Option<Login>> {
    sqlx::query_as(
        "SELECT id, org_id, password_hash FROM users WHERE email = $1 AND removed_at IS NULL",
    )
    .bind(email)
    .fetch_optional(db)
    .await
}

/// The organization and role of an open account: `None` once it was removed.
pub async fn membership(db: impl PgExecutor<'_>, user: Uuid) -> Result<Option<(OrgId, Role)>> {
    sqlx::query_as("SELECT org_id, role FROM users WHERE id = $1 AND removed_at IS NULL")
        .bind(user)
        .fetch_optional(db)
        .await
}

pub async fn organization(db: impl PgExecutor<'_>, id: OrgId) -> Result<Option<Organization>> {
    sqlx::query_as("SELECT id, name, created_at FROM organizations WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// The open accounts of an organization, oldest first.
pub async fn members(db: impl PgExecutor<'_>, org: OrgId) -> Result<Vec<Member>> {
    sqlx::query_as(
        "SELECT id, email, role, created_at FROM users \
         WHERE org_id = $1 AND removed_at IS NULL ORDER BY created_at, id",
    )
    .bind(org)
    .fetch_all(db)
    .await
}

#[derive(Debug, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// No open account of this organization has this id.
    NotMember,
    /// The caller's role may not remove this member's role (or the caller itself).
    Forbidden,
}

/// Closes a member's account (`removed_at`), if `actor` (a `actor_role` of `org`) may.
/// The update is guarded by the role that was checked, so a role changed meanwhile is not
/// bypassed.
pub async fn remove_member(
    db: &PgPool,
    org: OrgId,
    actor: Uuid,
    actor_role: Role,
    member: Uuid,
) -> Result<Removal> {
    let target: Option<Role> = sqlx::query_scalar(
        "SELECT role FROM users WHERE id = $1 AND org_id = $2 AND removed_at IS NULL",
    )
    .bind(member)
    .bind(org)
    .fetch_optional(db)
    .await?;
    let Some(target) = target else {
        return Ok(Removal::NotMember);
    };
    if member == actor || !actor_role.may_remove(target) {
        return Ok(Removal::Forbidden);
    }
    let done = sqlx::query(
        "UPDATE users SET removed_at = now() \
         WHERE id = $1 AND org_id = $2 AND role = $3 AND removed_at IS NULL",
    )
    .bind(member)
    .bind(org)
    .bind(target)
    .execute(db)
    .await?;
    Ok(if done.rows_affected() == 1 {
        Removal::Removed
    } else {
        Removal::NotMember
    })
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Invitation {
    pub id: Uuid,
    pub email: Option<String>,
    pub role: Role,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

pub struct NewInvitation<'a> {
    pub org: OrgId,
    pub created_by: Uuid,
    pub email: Option<&'a str>,
    pub role: Role,
    pub ttl: Duration,
    /// At most this many pending (unused, unexpired, unrevoked) invitations per organization.
    pub max_pending: i64,
}

/// A new invitation and its token (shown once: only its hash is stored); `None` when the
/// organization already has `max_pending` pending ones. The count and the insert run under
/// a lock on the organization's row, so concurrent requests cannot exceed it.
pub async fn create_invitation(
    pool: &PgPool,
    new: &NewInvitation<'_>,
) -> Result<Option<(Invitation, String)>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT 1 FROM organizations WHERE id = $1 FOR UPDATE")
        .bind(new.org)
        .execute(&mut *tx)
        .await?;
    let pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM org_invitations \
         WHERE org_id = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now()",
    )
    .bind(new.org)
    .fetch_one(&mut *tx)
    .await?;
    if pending >= new.max_pending {
        return Ok(None);
    }
    let token = new_token();
    let invitation: Invitation = sqlx::query_as(
        "INSERT INTO org_invitations (id, org_id, token_hash, email, role, created_by, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7)) \
         RETURNING id, email, role, created_by, created_at, expires_at",
    )
    .bind(Uuid::new_v4())
    .bind(new.org)
    .bind(token_hash(&token))
    .bind(new.email)
    .bind(new.role)
    .bind(new.created_by)
    .bind(new.ttl.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some((invitation, token)))
}

/// The organization's pending invitations, newest first.
pub async fn pending_invitations(db: impl PgExecutor<'_>, org: OrgId) -> Result<Vec<Invitation>> {
    sqlx::query_as(
        "SELECT id, email, role, created_by, created_at, expires_at FROM org_invitations \
         WHERE org_id = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now() \
         ORDER BY created_at DESC, id",
    )
    .bind(org)
    .fetch_all(db)
    .await
}

/// Revokes a pending invitation of the organization; false when there is none with this id.
pub async fn revoke_invitation(db: impl PgExecutor<'_>, org: OrgId, id: Uuid) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE org_invitations SET revoked_at = now() \
         WHERE id = $1 AND org_id = $2 AND used_at IS NULL AND revoked_at IS NULL",
    )
    .bind(id)
    .bind(org)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The account jobs submitted without the API belong to (`bulk-import-importer submit
/// --owner`): the open account with this email, or a new one without a usable password
/// (hash `!`: nobody can log in as it) in a new organization it owns.
pub async fn service_account(pool: &PgPool, email: &str) -> Result<(Uuid, OrgId)> {
    loop {
        let found: Option<(Uuid, OrgId)> =
            sqlx::query_as("SELECT id, org_id FROM users WHERE email = $1 AND removed_at IS NULL")
                .bind(email)
                .fetch_optional(pool)
                .await?;
        if let Some(found) = found {
            return Ok(found);
        }
        let id = Uuid::new_v4();
        match register(
            pool,
            id,
            email,
            "!",
            Joining::NewOrganization { name: email },
        )
        .await?
        {
            Registered::Created { organization, .. } => return Ok((id, organization.id)),
            // Created meanwhile by someone else: read it.
            _ => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_remove_whom() {
        assert!(Role::Owner.may_remove(Role::Admin));
        assert!(Role::Owner.may_remove(Role::Member));
        assert!(!Role::Owner.may_remove(Role::Owner));
        assert!(Role::Admin.may_remove(Role::Member));
        assert!(!Role::Admin.may_remove(Role::Admin));
        assert!(!Role::Admin.may_remove(Role::Owner));
        assert!(!Role::Member.may_remove(Role::Member));
    }

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
    }
}
