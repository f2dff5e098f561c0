//! The chart's RBAC rules, read from its templates (no Helm needed): the operator's rules are the
//! plain-YAML body of the `sequencer-operator.rules` define in `_helpers.tpl`, the leader-election
//! rules those of the `-leader-election` Role in `rbac.yaml`. The RBAC contract test checks every
//! request against them; the real-cluster suite installs them to run the controllers with exactly
//! the chart's permissions.

use serde_json::Value;

const HELPERS: &str = include_str!("../../charts/sequencer-operator/templates/_helpers.tpl");
/// The chart's `rbac.yaml` template.
pub const RBAC_TEMPLATE: &str = include_str!("../../charts/sequencer-operator/templates/rbac.yaml");

/// The body of `{{- define "name" -}}` in `_helpers.tpl`.
pub fn define_body(name: &str) -> &'static str {
    let start = HELPERS.find(&format!("{{{{- define \"{name}\" -}}}}")).unwrap_or_else(|| panic!("no define {name}"));
    let body = &HELPERS[start..];
    let body = &body[body.find('\n').expect("a define spans lines") + 1..];
    &body[..body.find("{{- end -}}").expect("a define ends")]
}

fn parse_rules(yaml: &str) -> Vec<Value> {
    let value: Value = yaml_serde::from_str(yaml).unwrap_or_else(|e| panic!("rules do not parse: {e}\n{yaml}"));
    value.as_array().cloned().unwrap_or_default()
}

/// The operator's rules, bound by a ClusterRole or, with `watchNamespace`, a Role there.
pub fn operator_rules() -> Vec<Value> {
    parse_rules(define_body("sequencer-operator.rules"))
}

/// The leader-election Role's rules for a Lease named `lease_name`, bound in the Lease's namespace.
pub fn leader_rules(lease_name: &str) -> Vec<Value> {
    let role = &RBAC_TEMPLATE[RBAC_TEMPLATE.find("-leader-election").expect("a leader-election Role")..];
    let rules = &role[role.find("rules:").expect("rules") + "rules:".len()..];
    let rules = &rules[..rules.find("---").expect("a binding follows")];
    parse_rules(&rules.replace("{{ .Values.leaderElection.leaseName | quote }}", &format!("\"{lease_name}\"")))
}
