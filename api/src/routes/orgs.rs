//! The caller's organization (docs/organizations.md): `GET /orgs/current`,
//! `DELETE /orgs/members/{id}`, and invitations (`POST`, `GET /orgs/invitations`,
//! `DELETE /orgs/invitations/{id}`). Managing members and invitations is for owners and
//! admins (403 `forbidden` for members).

use crate::{
    access::path_id,
    auth::AuthUser,
    error::{ApiError, ApiResult},
    extract::Json,
    state::AppState,
};
use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::{delete, get},
    Router,
};
use bulk_import_core::{
    accounts::{self, NewInvitation, Removal, Role},
    Email,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/orgs/current", get(current))
        .route("/orgs/members/{id}", delete(remove_member))
        .route(
            "/orgs/invitations",
            get(list_invitations).post(create_invitation),
        )
        .route("/orgs/invitations/{id}", delete(revoke_invitation))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OrganizationView {
    pub id: i32,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// The caller's role: `owner`, `admin` or `member`.
    #[schema(example = "member")]
    pub role: String,
    /// The open accounts of the organization, oldest first.
    pub members: Vec<MemberView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MemberView {
    pub id: Uuid,
    pub email: String,
    pub joined_at: DateTime<Utc>,
    /// Shown to owners and admins; `null` for members.
    pub role: Option<String>,
}

/// The caller's organization and its members.
#[utoipa::path(get, path = "/orgs/current", tag = "organizations",
    responses((status = 200, body = OrganizationView), (status = 401, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn current(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<axum::Json<OrganizationView>> {
    let org = accounts::organization(&state.pool, user.org)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the token's organization does not exist"))?;
    let members = accounts::members(&state.pool, user.org).await?;
    let show_roles = user.role.manages();
    Ok(axum::Json(OrganizationView {
        id: org.id,
        name: org.name,
        created_at: org.created_at,
        role: user.role.to_string(),
        members: members
            .into_iter()
            .map(|m| MemberView {
                id: m.id,
                email: m.email,
                joined_at: m.created_at,
                role: show_roles.then(|| m.role.to_string()),
            })
            .collect(),
    }))
}

/// Remove a member: the account is closed at once (its tokens answer 401); the jobs it
/// started stay with the organization. Owners remove anyone but themselves, admins members.
#[utoipa::path(delete, path = "/orgs/members/{id}", tag = "organizations", params(("id" = Uuid, Path)),
    responses((status = 204, description = "removed"),
              (status = 403, body = crate::error::ErrorBody, description = "`forbidden`: the caller's role may not remove this member (or itself)"),
              (status = 404, body = crate::error::ErrorBody, description = "not a member of the caller's organization")),
    security(("bearer" = [])))]
pub async fn remove_member(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    user.must_manage()?;
    let member = path_id(&id)?;
    match accounts::remove_member(&state.pool, user.org, user.id, user.role, member).await? {
        Removal::Removed => {
            tracing::info!(org_id = user.org, by = %user.id, %member, "member removed");
            Ok(StatusCode::NO_CONTENT)
        }
        Removal::NotMember => Err(ApiError::not_found()),
        Removal::Forbidden => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "your role may not remove this member",
        )),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct InvitationRequest {
    /// Only this email may use the invitation (any email when absent).
    #[serde(default)]
    pub email: Option<String>,
    /// `member` (default) or `admin`.
    #[serde(default)]
    #[schema(example = "member")]
    pub role: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct InvitationView {
    pub id: Uuid,
    pub email: Option<String>,
    #[schema(example = "member")]
    pub role: String,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct NewInvitationView {
    #[serde(flatten)]
    pub invitation: InvitationView,
    /// Give it to the person you invite: `POST /auth/register` with `"invitation"`. Shown
    /// only now (only its hash is stored); single use.
    pub token: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct InvitationList {
    pub items: Vec<InvitationView>,
}

impl From<accounts::Invitation> for InvitationView {
    fn from(i: accounts::Invitation) -> Self {
        InvitationView {
            id: i.id,
            email: i.email,
            role: i.role.to_string(),
            created_by: i.created_by,
            created_at: i.created_at,
            expires_at: i.expires_at,
        }
    }
}

/// Invite someone into the organization: a single-use token that expires after
/// `INVITATION_TTL_SECONDS`.
#[utoipa::path(post, path = "/orgs/invitations", tag = "organizations", request_body = InvitationRequest,
    responses((status = 201, body = NewInvitationView),
              (status = 403, body = crate::error::ErrorBody, description = "`forbidden`: members cannot invite"),
              (status = 422, body = crate::error::ErrorBody, description = "`invalid_email` or `invalid_role`"),
              (status = 429, body = crate::error::ErrorBody, description = "`too_many_invitations`: INVITATIONS_MAX_PENDING pending already")),
    security(("bearer" = [])))]
pub async fn create_invitation(
    State(state): State<AppState>,
    user: AuthUser,
    Json(body): Json<InvitationRequest>,
) -> ApiResult<(StatusCode, axum::Json<NewInvitationView>)> {
    user.must_manage()?;
    let email = match body.email.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => Some(
            Email::parse(raw)
                .map_err(|e| ApiError::unprocessable("invalid_email", e.to_string()))?
                .into_string(),
        ),
    };
    let role = match body.role.as_deref() {
        None | Some("member") => Role::Member,
        Some("admin") => Role::Admin,
        Some(other) => {
            return Err(ApiError::unprocessable(
                "invalid_role",
                format!("role must be member or admin, not {other:?}"),
            ))
        }
    };
    let api = &state.settings.api;
    let new = NewInvitation {
        org: user.org,
        created_by: user.id,
        email: email.as_deref(),
        role,
        ttl: api.invitation_ttl,
        max_pending: api.invitations_max_pending,
    };
    let Some((invitation, token)) = accounts::create_invitation(&state.pool, &new).await? else {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_invitations",
            format!(
                "the organization has {} pending invitations already; revoke some or wait for them to expire",
                api.invitations_max_pending
            ),
        );
        e.retry_after = Some(3600);
        return Err(e);
    };
    tracing::info!(org_id = user.org, by = %user.id, invitation = %invitation.id, %role, "invitation created");
    Ok((
        StatusCode::CREATED,
        axum::Json(NewInvitationView {
            invitation: invitation.into(),
            token,
        }),
    ))
}

/// The organization's pending invitations (unused, unexpired, not revoked), newest first.
#[utoipa::path(get, path = "/orgs/invitations", tag = "organizations",
    responses((status = 200, body = InvitationList), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_invitations(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<axum::Json<InvitationList>> {
    user.must_manage()?;
    let items = accounts::pending_invitations(&state.pool, user.org).await?;
    Ok(axum::Json(InvitationList {
        items: items.into_iter().map(InvitationView::from).collect(),
    }))
}

/// Revoke a pending invitation.
#[utoipa::path(delete, path = "/orgs/invitations/{id}", tag = "organizations", params(("id" = Uuid, Path)),
    responses((status = 204, description = "revoked"), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody, description = "no pending invitation of the organization with this id")),
    security(("bearer" = [])))]
pub async fn revoke_invitation(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    user.must_manage()?;
    let id = path_id(&id)?;
    if accounts::revoke_invitation(&state.pool, user.org, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found())
    }
}
