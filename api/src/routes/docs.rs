//! The OpenAPI document (`/openapi.json`) and the Swagger UI (`/docs`), served from the
//! binary (no CDN).

use crate::{
    error::ErrorBody,
    routes::{auth, control, customers, events, health, import_prefixes, imports, orgs, preview},
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
        imports::create, preview::preview, imports::list, imports::show, imports::errors_report, events::events,
        control::cancel, control::retry, control::remove,
        orgs::current, orgs::remove_member, orgs::create_invitation, orgs::list_invitations, orgs::revoke_invitation, import_prefixes::show, import_prefixes::replace,
        customers::list, customers::show, customers::export,
    ),
    components(schemas(ErrorBody, JobView, JobPage, crate::view::DialectView, crate::view::ColumnView, auth::Credentials, auth::Registration, auth::UserView, auth::OrganizationRef, crate::view::CreatedBy,
        orgs::OrganizationView, orgs::MemberView, orgs::InvitationRequest, orgs::InvitationView, orgs::NewInvitationView, orgs::InvitationList, import_prefixes::ImportPrefixes, crate::import_object::ObjectImport, crate::import_object::SourceRef,
        customers::CustomerPage, crate::customers::Customer, crate::error_rows::ErrorRowPage, crate::error_rows::ErrorRow, crate::error_rows::RowValues, crate::customers::CustomerDetail, auth::TokenView, imports::ReportLink, imports::UploadForm,
        bulk_import_types::PreviewView, bulk_import_types::HeaderMapping, bulk_import_types::PreviewRow, bulk_import_types::PreviewValues, bulk_import_types::RowProblem)),
    modifiers(&BearerAuth, &Enums),
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

/// The closed sets of strings as enums in the document: error codes (from `error::CODES`),
/// job statuses and modes (from the core types).
struct Enums;

impl Modify for Enums {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use bulk_import_core::{ImportMode, JobStatus};
        let statuses = [
            JobStatus::Pending,
            JobStatus::Processing,
            JobStatus::Done,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ]
        .map(JobStatus::as_str);
        // `queued`: a pending job waiting for an importer slot (`queue_position`).
        let statuses: Vec<&str> = std::iter::once("queued").chain(statuses).collect();
        let modes = [ImportMode::InsertOnly, ImportMode::Upsert].map(ImportMode::as_str);
        let codes: Vec<&str> = crate::error::CODES.iter().map(|(c, _)| *c).collect();
        let components = openapi.components.get_or_insert_with(Default::default);
        set_enum(components, "ErrorBody", "code", &codes);
        set_enum(components, "JobView", "status", &statuses);
        set_enum(components, "JobView", "mode", &modes);
    }
}

/// Makes `schema.property` a string enum of `values`, keeping its description and example.
fn set_enum(
    components: &mut utoipa::openapi::Components,
    schema: &str,
    property: &str,
    values: &[&str],
) {
    use utoipa::openapi::{schema::Schema, RefOr};
    let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(schema) else {
        panic!("no object schema {schema}");
    };
    let Some(RefOr::T(Schema::Object(field))) = object.properties.get_mut(property) else {
        panic!("no property {schema}.{property}");
    };
    field.enum_values = Some(values.iter().map(|v| (*v).into()).collect());
}

/// The OpenAPI document as served at `/openapi.json` (pretty-printed, with a final newline):
/// what `bulk-import-api openapi` prints and `docs/openapi.json` holds.
pub fn openapi_json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    text.push('\n');
    text
}

pub fn router() -> Router<AppState> {
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
}
