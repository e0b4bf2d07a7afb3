//! At start, before leading: does the installed ImportJob CRD have every field this
//! operator's own CRD has? Helm never upgrades a CRD, and an old one silently drops new fields
//! (a retry would stay pending). If fields are missing the operator logs one error line and
//! records a Warning Event `OutdatedCRD` on its own pod, naming them and the command that
//! upgrades the CRD, then goes on: what it can do with the old CRD it still does.

use bulk_import_core::crd::{ImportJob, OPERATOR_MANAGER};
use k8s_openapi::{
    api::core::v1::ObjectReference,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
    },
};
use kube::{
    runtime::events::{Event, EventType, Recorder, Reporter},
    Api, Client, CustomResourceExt,
};
use std::collections::BTreeSet;

/// The command that upgrades the CRD (Helm's field manager owns it after `helm install`).
pub const UPGRADE: &str =
    "kubectl apply --server-side --force-conflicts -f charts/bulk-import/crds/importjobs.bulkimport.dev.yaml";

/// Every property path of a schema: `spec.retries`, `status.conditions[].reason`, …
pub fn property_paths(schema: &JSONSchemaProps) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    walk("", schema, &mut out);
    out
}

fn walk(prefix: &str, schema: &JSONSchemaProps, out: &mut BTreeSet<String>) {
    for (name, child) in schema.properties.iter().flatten() {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        out.insert(path.clone());
        walk(&path, child, out);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = &schema.items {
        walk(&format!("{prefix}[]"), items, out);
    }
}

/// What `wanted` has that `installed` lacks: a served version, or a property path of one.
pub fn missing_fields(
    installed: &CustomResourceDefinition,
    wanted: &CustomResourceDefinition,
) -> Vec<String> {
    let schema = |crd: &CustomResourceDefinition, version: &str| {
        crd.spec
            .versions
            .iter()
            .find(|v| v.name == version)
            .map(|v| {
                v.schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                    .map(property_paths)
                    .unwrap_or_default()
            })
    };
    let mut missing = Vec::new();
    for version in &wanted.spec.versions {
        let want = schema(wanted, &version.name).unwrap_or_default();
        match schema(installed, &version.name) {
            None => missing.push(format!("version {}", version.name)),
            Some(have) => missing.extend(want.difference(&have).cloned()),
        }
    }
    missing
}

/// Reads the installed CRD and compares it with this operator's; logs and records an Event
/// when fields are missing. Never fails the start: a CRD that cannot be read (RBAC, a
/// network error) is a warning.
pub async fn check(client: &Client, namespace: &str, pod_name: &str) {
    let wanted = ImportJob::crd();
    let name = wanted.metadata.name.clone().unwrap_or_default();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let installed = match crds.get(&name).await {
        Ok(crd) => crd,
        Err(e) => {
            tracing::warn!(crd = %name, error = %e, "cannot read the installed CRD to check its fields");
            return;
        }
    };
    let missing = missing_fields(&installed, &wanted);
    if missing.is_empty() {
        tracing::info!(crd = %name, "the installed CRD has every field the operator needs");
        return;
    }
    let note = format!(
        "the installed CRD {name} lacks {}: upgrade it with `{UPGRADE}` (or the same on the chart's crds/ after helm upgrade)",
        missing.join(", ")
    );
    tracing::error!("{note}");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: OPERATOR_MANAGER.into(),
            instance: Some(pod_name.into()),
        },
    );
    let pod = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(pod_name.into()),
        namespace: Some(namespace.into()),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: "OutdatedCRD".into(),
        note: Some(note.chars().take(1024).collect()),
        action: "CheckCRD".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &pod).await {
        tracing::warn!(error = %e, "cannot record the OutdatedCRD Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_crd_lacks_nothing_and_a_pruned_one_names_its_missing_fields() {
        let wanted = ImportJob::crd();
        assert_eq!(missing_fields(&wanted, &wanted), Vec::<String>::new());
        let paths = property_paths(
            wanted.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        );
        for p in [
            "spec.retries",
            "status.memoryLimit",
            "status.conditions[].reason",
        ] {
            assert!(paths.contains(p), "{p} in {paths:?}");
        }
        let mut old = wanted.clone();
        let status = old.spec.versions[0]
            .schema
            .as_mut()
            .unwrap()
            .open_api_v3_schema
            .as_mut()
            .unwrap()
            .properties
            .as_mut()
            .unwrap()
            .get_mut("status")
            .unwrap();
        status.properties.as_mut().unwrap().remove("memoryLimit");
        assert_eq!(missing_fields(&old, &wanted), vec!["status.memoryLimit"]);
        old.spec.versions[0].name = "v1alpha0".into();
        assert_eq!(missing_fields(&old, &wanted), vec!["version v1alpha1"]);
    }
}
