//! Printers of configuration and access kinds.

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::cells::{
    AGE, Column, NAME, Row, age, col, flag, int_at, len_at, list, name_of, opt_str, str_at, wide,
};

// --- configuration and access --------------------------------------------------------------

pub(super) const CONFIGMAP_COLUMNS: &[Column] = &[
    NAME,
    col("Data", "string", "Number of keys in data and binaryData."),
    AGE,
];

pub(super) fn configmap_row(now: OffsetDateTime, cm: &Value) -> Row {
    let keys = len_at(cm, &["data"]).saturating_add(len_at(cm, &["binaryData"]));
    vec![json!(name_of(cm)), json!(keys), json!(age(now, cm))].into()
}

pub(super) const SECRET_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", "Type of the secret."),
    col("Data", "string", "Number of keys in data."),
    AGE,
];

pub(super) fn secret_row(now: OffsetDateTime, secret: &Value) -> Row {
    // The API server defaults the type to Opaque.
    let ty = opt_str(secret, &["type"]).unwrap_or("Opaque");
    vec![
        json!(name_of(secret)),
        json!(ty),
        json!(len_at(secret, &["data"])),
        json!(age(now, secret)),
    ]
    .into()
}

pub(super) const SERVICEACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Secrets",
        "string",
        "Number of secrets listed in the service account.",
    ),
    AGE,
];

pub(super) fn serviceaccount_row(now: OffsetDateTime, sa: &Value) -> Row {
    vec![
        json!(name_of(sa)),
        json!(len_at(sa, &["secrets"])),
        json!(age(now, sa)),
    ]
    .into()
}

pub(super) const ROLEBINDING_COLUMNS: &[Column] = &[
    NAME,
    col("Role", "string", "The role granted, as Kind/name."),
    AGE,
    wide("Users", "string", "Users the binding applies to."),
    wide("Groups", "string", "Groups the binding applies to."),
    wide(
        "ServiceAccounts",
        "string",
        "Service accounts the binding applies to, as namespace/name.",
    ),
];

pub(super) fn rolebinding_row(now: OffsetDateTime, rb: &Value) -> Row {
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut service_accounts = Vec::new();
    for subject in list(rb, &["subjects"]) {
        let name = str_at(subject, &["name"]);
        match str_at(subject, &["kind"]) {
            "User" => users.push(name.to_owned()),
            "Group" => groups.push(name.to_owned()),
            "ServiceAccount" => {
                service_accounts.push(format!("{}/{name}", str_at(subject, &["namespace"])));
            }
            _ => {}
        }
    }
    let role = format!(
        "{}/{}",
        str_at(rb, &["roleRef", "kind"]),
        str_at(rb, &["roleRef", "name"])
    );
    vec![
        json!(name_of(rb)),
        json!(role),
        json!(age(now, rb)),
        json!(users.join(", ")),
        json!(groups.join(", ")),
        json!(service_accounts.join(", ")),
    ]
    .into()
}

pub(super) const LEASE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Holder",
        "string",
        "Identity of the current holder of the lease.",
    ),
    AGE,
];

pub(super) fn lease_row(now: OffsetDateTime, lease: &Value) -> Row {
    vec![
        json!(name_of(lease)),
        json!(str_at(lease, &["spec", "holderIdentity"])),
        json!(age(now, lease)),
    ]
    .into()
}

pub(super) const PRIORITYCLASS_COLUMNS: &[Column] = &[
    NAME,
    col("Value", "integer", "Priority given to pods of this class."),
    col(
        "Global-Default",
        "boolean",
        "Whether pods without a priority class get this one.",
    ),
    AGE,
    col(
        "PreemptionPolicy",
        "string",
        "Whether pods of this class may preempt lower-priority pods.",
    ),
];

pub(super) fn priorityclass_row(now: OffsetDateTime, pc: &Value) -> Row {
    // The API server defaults preemptionPolicy to PreemptLowerPriority.
    let policy = opt_str(pc, &["preemptionPolicy"]).unwrap_or("PreemptLowerPriority");
    vec![
        json!(name_of(pc)),
        json!(int_at(pc, &["value"]).unwrap_or(0)),
        json!(flag(pc, &["globalDefault"])),
        json!(age(now, pc)),
        json!(policy),
    ]
    .into()
}

pub(super) const WEBHOOK_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Webhooks",
        "integer",
        "Number of webhooks in this configuration.",
    ),
    AGE,
];

pub(super) fn webhook_row(now: OffsetDateTime, cfg: &Value) -> Row {
    vec![
        json!(name_of(cfg)),
        json!(len_at(cfg, &["webhooks"])),
        json!(age(now, cfg)),
    ]
    .into()
}
