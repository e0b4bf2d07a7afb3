//! Where and how importer pods are scheduled, from the operator's environment (the chart
//! renders them from its `importer:` values): node selector, tolerations, affinity, priority
//! class, extra pod labels and annotations, ephemeral-storage request and limit. Structured
//! values are JSON; each is checked when the operator starts, and an error names the variable.

use bulk_import_core::vars::{ConfigError, Env};
use k8s_openapi::{
    api::core::v1::{Affinity, PodSpec, Toleration},
    apimachinery::pkg::api::resource::Quantity,
};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

/// The labels the operator puts on importer Jobs and pods and selects them by (its watches,
/// the chart's NetworkPolicy): `IMPORTER_POD_LABELS` may not set them.
pub const RESERVED_LABELS: [&str; 5] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    bulk_import_core::crd::JOB_ID_LABEL,
];

/// The importer pods' placement and extra metadata. Empty: the pod is as it always was.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub affinity: Option<Affinity>,
    pub priority_class_name: Option<String>,
    /// Added to the pod template's labels (never replacing [`RESERVED_LABELS`]).
    pub pod_labels: BTreeMap<String, String>,
    pub pod_annotations: BTreeMap<String, String>,
    pub ephemeral_storage_request: Option<Quantity>,
    pub ephemeral_storage_limit: Option<Quantity>,
}

impl Placement {
    pub fn from_env(env: &Env) -> Result<Placement, ConfigError> {
        let affinity: Affinity = json(env, "IMPORTER_AFFINITY")?;
        let pod_labels: BTreeMap<String, String> = json(env, "IMPORTER_POD_LABELS")?;
        if let Some(key) = pod_labels
            .keys()
            .find(|k| RESERVED_LABELS.contains(&k.as_str()))
        {
            return Err(ConfigError {
                var: "IMPORTER_POD_LABELS",
                reason: format!("{key:?} is set by the operator and cannot be overridden"),
            });
        }
        Ok(Placement {
            node_selector: json(env, "IMPORTER_NODE_SELECTOR")?,
            tolerations: json(env, "IMPORTER_TOLERATIONS")?,
            affinity: (affinity != Affinity::default()).then_some(affinity),
            priority_class_name: env.get("IMPORTER_PRIORITY_CLASS_NAME"),
            pod_labels,
            pod_annotations: json(env, "IMPORTER_POD_ANNOTATIONS")?,
            ephemeral_storage_request: quantity(env, "IMPORTER_EPHEMERAL_STORAGE_REQUEST")?,
            ephemeral_storage_limit: quantity(env, "IMPORTER_EPHEMERAL_STORAGE_LIMIT")?,
        })
    }

    /// Node selector, tolerations, affinity and priority class onto the importer's pod spec.
    pub fn apply_to(&self, pod: &mut PodSpec) {
        if !self.node_selector.is_empty() {
            pod.node_selector = Some(self.node_selector.clone());
        }
        if !self.tolerations.is_empty() {
            pod.tolerations = Some(self.tolerations.clone());
        }
        pod.affinity.clone_from(&self.affinity);
        pod.priority_class_name
            .clone_from(&self.priority_class_name);
    }

    /// The pod template's labels: the operator's own, plus the extra ones.
    pub fn pod_labels(&self, own: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut labels = self.pod_labels.clone();
        labels.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        labels
    }

    pub fn pod_annotations(&self) -> Option<BTreeMap<String, String>> {
        (!self.pod_annotations.is_empty()).then(|| self.pod_annotations.clone())
    }
}

/// A declared variable holding JSON (its default is JSON too).
fn json<T: DeserializeOwned>(env: &Env, var: &'static str) -> Result<T, ConfigError> {
    let text = env.value(var);
    serde_json::from_str(&text).map_err(|e| ConfigError {
        var,
        reason: format!("invalid JSON {text:?}: {e}"),
    })
}

/// A Kubernetes quantity such as `128Mi` or `1G`, or nothing when unset.
fn quantity(env: &Env, var: &'static str) -> Result<Option<Quantity>, ConfigError> {
    let Some(v) = env.get(var) else {
        return Ok(None);
    };
    if !is_quantity(&v) {
        return Err(ConfigError {
            var,
            reason: format!("invalid quantity {v:?}: expected e.g. 512Mi or 2Gi"),
        });
    }
    Ok(Some(Quantity(v)))
}

/// A plain decimal with an optional binary or decimal suffix (the forms used for storage).
fn is_quantity(v: &str) -> bool {
    const SUFFIXES: [&str; 13] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E", "",
    ];
    SUFFIXES.iter().any(|s| {
        v.strip_suffix(s).is_some_and(|n| {
            let mut parts = n.splitn(2, '.');
            let whole = parts.next().unwrap_or_default();
            let frac = parts.next();
            !whole.is_empty()
                && whole.bytes().all(|b| b.is_ascii_digit())
                && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(vars: &[(&str, &str)]) -> Result<Placement, ConfigError> {
        let lookup = |k: &str| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        };
        Placement::from_env(&Env::new(&lookup))
    }

    #[test]
    fn unset_means_no_placement() {
        assert_eq!(placement(&[]).unwrap(), Placement::default());
    }

    #[test]
    fn invalid_values_are_refused_naming_the_variable() {
        let cases = [
            ("IMPORTER_NODE_SELECTOR", "{not json"),
            ("IMPORTER_NODE_SELECTOR", "[\"a\"]"),
            ("IMPORTER_NODE_SELECTOR", "{\"disk\": 1}"),
            ("IMPORTER_TOLERATIONS", "{}"),
            ("IMPORTER_TOLERATIONS", "[{\"key\": 5}]"),
            ("IMPORTER_AFFINITY", "[]"),
            ("IMPORTER_POD_LABELS", "\"queue\""),
            ("IMPORTER_POD_ANNOTATIONS", "{\"a\": true}"),
            ("IMPORTER_EPHEMERAL_STORAGE_REQUEST", "lots"),
            ("IMPORTER_EPHEMERAL_STORAGE_LIMIT", "1.Gi"),
            ("IMPORTER_EPHEMERAL_STORAGE_LIMIT", "-1Gi"),
        ];
        for (var, value) in cases {
            let err = placement(&[(var, value)]).expect_err(value);
            assert_eq!(err.var, var, "{value}");
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn the_operators_labels_cannot_be_overridden() {
        for key in RESERVED_LABELS {
            let value = format!("{{\"{key}\": \"x\"}}");
            let err = placement(&[("IMPORTER_POD_LABELS", &value)]).expect_err(key);
            assert_eq!(err.var, "IMPORTER_POD_LABELS");
            assert!(err.reason.contains(key), "{err}");
        }
        let ok = placement(&[(
            "IMPORTER_POD_LABELS",
            r#"{"kueue.x-k8s.io/queue-name": "q"}"#,
        )]);
        assert_eq!(ok.unwrap().pod_labels.len(), 1);
    }

    #[test]
    fn quantities_take_the_storage_forms() {
        for ok in ["1Gi", "512Mi", "1.5G", "100", "2k"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "Gi", "1.Gi", ".5Gi", "1 Gi", "1GB", "-1", "1e3x"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }
}
