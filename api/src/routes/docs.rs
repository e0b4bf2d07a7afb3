//! The OpenAPI document (`/openapi.json`) and the Swagger UI (`/docs`), served from the
//! binary (no CDN).

use crate::{
    error::ErrorBody,
    routes::{auth, control, customers, events, health, imports, orgs},
    state::AppState,
    view::{JobPage, JobView},
};
use axum::Router;
use utoipa::{
    openapi::security::{Flow, OAuth2, Password, Scopes, SecurityScheme},
    Modify, OpenApi,
};
use utoipa_swagger_ui::SwaggerUi;

#[derive(OpenApi)]
#[openapi(
    info(title = "bulk-import", description = "Load customer CSV files into Postgres: idempotent uploads, live progress, error reports."),
    paths(
        health::health, health::ready, auth::register, auth::token,
        imports::create, imports::list, imports::show, imports::errors_report, events::events,
        control::cancel, control::retry, control::remove,
        orgs::current, orgs::remove_member, orgs::create_invitation, orgs::list_invitations, orgs::revoke_invitation,
        customers::list, customers::show, customers::export,
    ),
    components(schemas(ErrorBody, JobView, JobPage, crate::view::DialectView, crate::view::ColumnView, auth::Credentials, auth::Registration, auth::UserView, auth::OrganizationRef, crate::view::CreatedBy,
        orgs::OrganizationView, orgs::MemberView, orgs::InvitationRequest, orgs::InvitationView, orgs::NewInvitationView, orgs::InvitationList,
        customers::CustomerPage, crate::customers::Customer, crate::customers::CustomerDetail, auth::TokenView, imports::ReportLink, imports::UploadForm)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::OAuth2(OAuth2::new([Flow::Password(Password::new(
                "/auth/token",
                Scopes::new(),
            ))])),
        );
    }
}

pub fn router() -> Router<AppState> {
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
}
