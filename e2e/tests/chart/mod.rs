//! The chart as `helm template` renders it, turned into the objects to apply: `tests/cluster.rs`
//! installs the operator from them. Rendering needs helm (`HELM`, else `helm` on PATH); what follows
//! it (splitting the documents, placing each object in its namespace or none, helm's install order,
//! reading the operator's settings back) is unit-tested here on a fixture and needs no cluster.

use std::path::{Path, PathBuf};
use std::process::Command;

use kube::api::{DynamicObject, GroupVersionKind};
use kube::discovery::Scope;
use serde::Deserialize;

/// A rendered chart (watchNamespace mode), written out by hand in helm's format: see its header.
pub const FIXTURE: &str = include_str!("helm-template-watch-namespace.yaml");

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").join("charts/sequencer-operator")
}

/// The helm binary: `HELM` when set, else `helm` from PATH.
pub fn helm() -> PathBuf {
    std::env::var_os("HELM").filter(|v| !v.is_empty()).map_or_else(|| PathBuf::from("helm"), PathBuf::from)
}

/// `helm version --short`, or why helm cannot be run.
pub fn helm_version(helm: &Path) -> Result<String, String> {
    match Command::new(helm).args(["version", "--short"]).output() {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        Ok(out) => Err(format!(
            "`{} version --short` failed ({}): {}",
            helm.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(error) => Err(format!(
            "helm is needed to render the chart and `{}` cannot be run ({error}); put helm on PATH or set HELM to it",
            helm.display()
        )),
    }
}

/// One install of the chart, as `helm template` is told it.
pub struct Release<'a> {
    /// The release name (it prefixes every object's name, the cluster-wide ones too).
    pub name: &'a str,
    /// The release namespace: the operator's ServiceAccount, Deployment and Service.
    pub namespace: &'a str,
    /// `watchNamespace`; None installs the operator cluster-wide.
    pub watch_namespace: Option<&'a str>,
    /// The operator image `repository:tag`; None keeps the chart's default.
    pub image: Option<&'a str>,
}

impl Release<'_> {
    /// The arguments of `helm template` for this release.
    pub fn template_args(&self) -> Result<Vec<String>, String> {
        let mut args: Vec<String> = vec![
            "template".into(),
            self.name.into(),
            chart_dir().display().to_string(),
            "--namespace".into(),
            self.namespace.into(),
        ];
        // NB: --set-string: a tag such as 1.10 must stay a string.
        let mut set = |key: &str, value: &str| args.extend(["--set-string".to_string(), format!("{key}={value}")]);
        if let Some(namespace) = self.watch_namespace {
            set("watchNamespace", namespace);
        }
        if let Some(image) = self.image {
            let (repository, tag) = split_image(image)?;
            set("image.repository", repository);
            set("image.tag", tag);
        }
        Ok(args)
    }

    /// The chart's objects for this release, as `helm template` prints them.
    pub fn render(&self, helm: &Path) -> Result<String, String> {
        let args = self.template_args()?;
        let out = Command::new(helm)
            .args(&args)
            .output()
            .map_err(|e| format!("running {} {}: {e}", helm.display(), args.join(" ")))?;
        if !out.status.success() {
            return Err(format!(
                "{} {} failed ({}): {}",
                helm.display(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        String::from_utf8(out.stdout).map_err(|e| format!("helm template printed no UTF-8: {e}"))
    }
}

/// `repository:tag` split for the chart's `image.repository` and `image.tag`.
pub fn split_image(image: &str) -> Result<(&str, &str), String> {
    if image.contains('@') {
        return Err(format!("{image}: the chart takes a repository and a tag, not a digest"));
    }
    match image.rsplit_once(':') {
        // NB: a colon before the last slash is a registry's port, not a tag.
        Some((repository, tag)) if !repository.is_empty() && !tag.is_empty() && !tag.contains('/') => {
            Ok((repository, tag))
        }
        _ => Err(format!("{image}: name the operator image as repository:tag")),
    }
}

/// Every object of a multi-document YAML stream (helm's output), in order; documents holding only
/// comments or nothing are skipped, and an object without apiVersion, kind or name is an error.
pub fn parse_manifests(yaml: &str) -> Result<Vec<DynamicObject>, String> {
    let mut objects = Vec::new();
    for (index, document) in yaml_serde::Deserializer::from_str(yaml).enumerate() {
        let value = serde_json::Value::deserialize(document).map_err(|e| format!("document {index}: {e}"))?;
        if value.is_null() {
            continue;
        }
        let object: DynamicObject =
            serde_json::from_value(value).map_err(|e| format!("document {index} is no Kubernetes object: {e}"))?;
        let types = object.types.as_ref().filter(|t| !t.api_version.is_empty() && !t.kind.is_empty());
        if types.is_none() {
            return Err(format!("document {index} has no apiVersion or kind"));
        }
        if object.metadata.name.as_deref().unwrap_or_default().is_empty() {
            return Err(format!("document {index} ({}) has no name", kind(&object)));
        }
        objects.push(object);
    }
    Ok(objects)
}

/// The object's kind.
pub fn kind(object: &DynamicObject) -> &str {
    object.types.as_ref().map_or("", |t| t.kind.as_str())
}

/// The object's group, version and kind (to discover its resource).
pub fn gvk(object: &DynamicObject) -> Result<GroupVersionKind, String> {
    let types = object.types.as_ref().ok_or("no apiVersion or kind")?;
    GroupVersionKind::try_from(types).map_err(|e| format!("apiVersion {}: {e}", types.api_version))
}

/// Places a rendered object as the API server wants it: a namespaced one in the namespace its
/// template names, or the release namespace when it names none (as helm does); a cluster-scoped
/// one in none (a template giving it a namespace is a chart bug). Returns the namespace.
pub fn place(object: &mut DynamicObject, scope: &Scope, release_namespace: &str) -> Result<Option<String>, String> {
    match scope {
        Scope::Namespaced => {
            let namespace = object.metadata.namespace.get_or_insert_with(|| release_namespace.to_string());
            Ok(Some(namespace.clone()))
        }
        Scope::Cluster => match &object.metadata.namespace {
            Some(namespace) => Err(format!(
                "{} {} is cluster-scoped but its template puts it in namespace {namespace}",
                kind(object),
                object.metadata.name.as_deref().unwrap_or_default()
            )),
            None => Ok(None),
        },
    }
}

/// Helm's install order of kinds (what a kind needs comes before it: the ServiceAccount and its
/// RBAC before the Deployment whose pods use them); unlisted kinds come last. Uninstall reverses it.
const INSTALL_ORDER: &[&str] = &[
    "PriorityClass",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// Sorts objects into helm's install order (stable: the rendered order within a kind).
pub fn sort_for_install(objects: &mut [DynamicObject]) {
    objects.sort_by_key(|o| INSTALL_ORDER.iter().position(|k| *k == kind(o)).unwrap_or(INSTALL_ORDER.len()));
}

/// The first container of a rendered Deployment.
fn container(deployment: &DynamicObject) -> &serde_json::Value {
    &deployment.data["spec"]["template"]["spec"]["containers"][0]
}

/// The literal value of environment variable `name` of a rendered Deployment's first container.
pub fn container_env(deployment: &DynamicObject, name: &str) -> Option<String> {
    let env = container(deployment)["env"].as_array()?;
    env.iter().find(|e| e["name"] == name)?["value"].as_str().map(str::to_string)
}

/// The image of a rendered Deployment's first container.
pub fn container_image(deployment: &DynamicObject) -> Option<String> {
    container(deployment)["image"].as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scopes of the kinds the chart renders, as discovery reports them.
    fn scope_of(kind: &str) -> Scope {
        match kind {
            "ClusterRole" | "ClusterRoleBinding" | "Namespace" | "CustomResourceDefinition" => Scope::Cluster,
            _ => Scope::Namespaced,
        }
    }

    fn name(object: &DynamicObject) -> &str {
        object.metadata.name.as_deref().unwrap()
    }

    /// Every object with its kind, name and the namespace [`place`] gives it.
    fn placed(objects: &mut [DynamicObject], release_namespace: &str) -> Vec<(String, String, Option<String>)> {
        objects
            .iter_mut()
            .map(|o| {
                let namespace = place(o, &scope_of(kind(o)), release_namespace).unwrap();
                (kind(o).to_string(), name(o).to_string(), namespace)
            })
            .collect()
    }

    #[test]
    fn helms_output_becomes_one_object_per_document_each_in_its_namespace_or_none() {
        let mut objects = parse_manifests(FIXTURE).unwrap();
        let (op, app) = (Some("seq-op".to_string()), Some("seq-app".to_string()));
        let fullname = "seq-e2e-sequencer-operator";
        let expected: Vec<(String, String, Option<String>)> = [
            ("ServiceAccount", fullname.to_string(), op.clone()),
            ("ClusterRole", format!("{fullname}-view"), None),
            ("ClusterRole", format!("{fullname}-edit"), None),
            ("Role", fullname.to_string(), app.clone()),
            ("Role", format!("{fullname}-leader-election"), app.clone()),
            ("RoleBinding", fullname.to_string(), app.clone()),
            ("RoleBinding", format!("{fullname}-leader-election"), app.clone()),
            ("Service", format!("{fullname}-metrics"), op.clone()),
            ("Deployment", fullname.to_string(), op.clone()),
        ]
        .into_iter()
        .map(|(k, n, ns)| (k.to_string(), n, ns))
        .collect();
        assert_eq!(placed(&mut objects, "seq-op"), expected);

        let role = &objects[3];
        assert_eq!(gvk(role).unwrap(), GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", "Role"));
        assert_eq!(role.data["rules"][1]["verbs"], serde_json::json!(["get", "list", "watch", "create", "patch"]));
        assert_eq!(gvk(&objects[0]).unwrap(), GroupVersionKind::gvk("", "v1", "ServiceAccount"));
        // What is applied is what was rendered: the labels and the body survive the round trip.
        let applied = serde_json::to_value(&objects[8]).unwrap();
        assert_eq!(applied["apiVersion"], "apps/v1");
        assert_eq!(applied["metadata"]["labels"]["app.kubernetes.io/instance"], "seq-e2e");
        assert_eq!(applied["spec"]["template"]["spec"]["serviceAccountName"], fullname);
    }

    #[test]
    fn the_operators_image_and_settings_are_read_back_from_the_rendered_deployment() {
        let objects = parse_manifests(FIXTURE).unwrap();
        let deployment = objects.iter().find(|o| kind(o) == "Deployment").unwrap();
        assert_eq!(container_image(deployment).as_deref(), Some("localhost/sequencer-operator:e2e"));
        assert_eq!(container_env(deployment, "WATCH_NAMESPACE").as_deref(), Some("seq-app"));
        assert_eq!(container_env(deployment, "LEASE_NAME").as_deref(), Some("sequencer-operator"));
        assert_eq!(container_env(deployment, "LEASE_NAMESPACE").as_deref(), Some("seq-app"));
        // POD_NAME comes from the downward API: no literal value.
        assert_eq!(container_env(deployment, "POD_NAME"), None);
        assert_eq!(container_env(deployment, "ABSENT"), None);
    }

    #[test]
    fn empty_and_comment_only_documents_are_skipped_and_incomplete_objects_refused() {
        let yaml = "# a leading comment\n---\n---\n# Source: a template that rendered to nothing\n---\n\
                    apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: \"1\"\n---\n";
        let objects = parse_manifests(yaml).unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!((kind(&objects[0]), name(&objects[0])), ("ConfigMap", "settings"));
        assert_eq!(objects[0].data["data"]["a"], "1");

        let error = parse_manifests("apiVersion: v1\nmetadata:\n  name: x\n").unwrap_err();
        assert!(error.contains("document 0") && error.contains("kind"), "{error}");
        let error = parse_manifests("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {}\n").unwrap_err();
        assert!(error.contains("ConfigMap") && error.contains("no name"), "{error}");
        let error = parse_manifests("kind: [unclosed\n").unwrap_err();
        assert!(error.contains("document 0"), "{error}");
    }

    #[test]
    fn a_namespaced_object_without_namespace_lands_in_the_release_namespace_a_cluster_one_in_none() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc\n---\n\
                    apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: role\n---\n\
                    apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: b\n  namespace: op\n";
        let mut objects = parse_manifests(yaml).unwrap();
        assert_eq!(place(&mut objects[0], &Scope::Namespaced, "op").unwrap().as_deref(), Some("op"));
        assert_eq!(objects[0].metadata.namespace.as_deref(), Some("op"), "the applied object carries it");
        assert_eq!(place(&mut objects[1], &Scope::Cluster, "op").unwrap(), None);
        let error = place(&mut objects[2], &Scope::Cluster, "op").unwrap_err();
        assert!(error.contains("ClusterRoleBinding b is cluster-scoped"), "{error}");
    }

    #[test]
    fn objects_are_applied_in_helms_install_order() {
        let yaml = ["Deployment", "PrometheusRule", "RoleBinding", "Service", "ClusterRoleBinding", "Role"]
            .iter()
            .chain(&["ClusterRole", "ServiceAccount", "PodDisruptionBudget", "ConfigMap"])
            .map(|k| format!("apiVersion: v1\nkind: {k}\nmetadata:\n  name: {}\n", k.to_lowercase()))
            .collect::<Vec<_>>()
            .join("---\n");
        let mut objects = parse_manifests(&yaml).unwrap();
        sort_for_install(&mut objects);
        let kinds: Vec<&str> = objects.iter().map(kind).collect();
        assert_eq!(
            kinds,
            [
                "PodDisruptionBudget",
                "ServiceAccount",
                "ConfigMap",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "Service",
                "Deployment",
                "PrometheusRule"
            ]
        );
    }

    #[test]
    fn an_operator_image_is_split_into_the_charts_repository_and_tag() {
        assert_eq!(
            split_image("ghcr.io/stateset/sequencer-operator:0.1.0"),
            Ok(("ghcr.io/stateset/sequencer-operator", "0.1.0"))
        );
        assert_eq!(split_image("localhost:5000/operator:dev"), Ok(("localhost:5000/operator", "dev")));
        assert!(split_image("localhost:5000/operator").is_err(), "a registry port is no tag");
        assert!(split_image("operator").is_err());
        assert!(split_image("operator@sha256:0123").is_err());
    }

    #[test]
    fn helm_template_is_told_the_namespace_the_install_mode_and_the_image() {
        let cluster_wide = Release { name: "rel", namespace: "op", watch_namespace: None, image: None };
        let args = cluster_wide.template_args().unwrap();
        assert_eq!(args[..2], ["template", "rel"]);
        assert!(args[2].ends_with("charts/sequencer-operator") && Path::new(&args[2]).join("Chart.yaml").is_file());
        assert_eq!(args[3..], ["--namespace", "op"]);

        let watching =
            Release { name: "rel", namespace: "op", watch_namespace: Some("app"), image: Some("local/op:e2e") };
        let args = watching.template_args().unwrap();
        assert_eq!(
            args[5..],
            [
                "--set-string",
                "watchNamespace=app",
                "--set-string",
                "image.repository=local/op",
                "--set-string",
                "image.tag=e2e"
            ]
        );
        let untagged = Release { image: Some("local/op"), ..cluster_wide };
        assert!(untagged.template_args().is_err());
    }

    /// With helm (no cluster needed): the chart renders in both install modes into objects that
    /// parse, and each mode grants what it should where it should.
    #[test]
    fn helm_renders_the_chart_in_both_install_modes() {
        let test = "helm_renders_the_chart_in_both_install_modes";
        let helm = helm();
        if let Err(why) = helm_version(&helm) {
            crate::skip(test, format_args!("{why}"));
            return;
        }
        let fullname = "rel-sequencer-operator";
        for watch_namespace in [None, Some("app")] {
            let release = Release { name: "rel", namespace: "op", watch_namespace, image: Some("local/op:e2e") };
            let mut objects = parse_manifests(&release.render(&helm).unwrap()).unwrap();
            let placed = placed(&mut objects, "op");
            let has = |kind: &str, name: &str, namespace: Option<&str>| {
                placed.iter().any(|(k, n, ns)| k == kind && n == name && ns.as_deref() == namespace)
            };
            for (kind, name, namespace) in &placed {
                let namespace = namespace.as_deref();
                assert!(
                    namespace.is_none() || namespace == Some("op") || namespace == watch_namespace,
                    "{kind} {name} in {namespace:?}"
                );
            }
            let leases = watch_namespace.or(Some("op"));
            assert!(has("ServiceAccount", fullname, Some("op")), "{placed:?}");
            assert!(has("Deployment", fullname, Some("op")), "{placed:?}");
            assert!(has("Role", &format!("{fullname}-leader-election"), leases), "{placed:?}");
            assert!(has("RoleBinding", &format!("{fullname}-leader-election"), leases), "{placed:?}");
            let deployment = objects.iter().find(|o| kind(o) == "Deployment").unwrap();
            assert_eq!(container_image(deployment).as_deref(), Some("local/op:e2e"));
            assert_eq!(container_env(deployment, "WATCH_NAMESPACE").as_deref(), Some(watch_namespace.unwrap_or("")));
            assert_eq!(container_env(deployment, "LEASE_NAMESPACE").as_deref(), leases);
            match watch_namespace {
                None => {
                    assert!(
                        has("ClusterRole", fullname, None) && has("ClusterRoleBinding", fullname, None),
                        "{placed:?}"
                    );
                    assert!(!placed.iter().any(|(k, n, _)| k == "Role" && n == fullname), "{placed:?}");
                }
                Some(app) => {
                    assert!(has("Role", fullname, Some(app)) && has("RoleBinding", fullname, Some(app)), "{placed:?}");
                    // Nothing cluster-wide grants the operator anything: the only ClusterRoles are
                    // the aggregated ones for people, and nothing binds them.
                    assert!(!placed.iter().any(|(k, _, _)| k == "ClusterRoleBinding"), "{placed:?}");
                    let mut cluster_roles: Vec<&str> =
                        placed.iter().filter(|(k, _, _)| k == "ClusterRole").map(|(_, n, _)| n.as_str()).collect();
                    cluster_roles.sort_unstable();
                    assert_eq!(cluster_roles, [format!("{fullname}-edit"), format!("{fullname}-view")]);
                }
            }
        }
    }
}
