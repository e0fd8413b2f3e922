//! The namespace controller.

use serde_json::{Value, json};

use crate::store::{DeleteOptions, Store, Sub};
use crate::{meta, resources};

use super::util::{ensure, is_deleting, log_err, r};

// ---------------------------------------------------------------- namespaces

pub(super) fn namespaces(store: &Store, ca_pem: &str) {
    let nsres = r("", "namespaces");
    for ns in store.list_all(nsres, None) {
        let name = meta::name(&ns).to_string();
        if is_deleting(&ns) {
            terminate_namespace(store, &ns);
            continue;
        }
        log_err(
            "create default service account",
            ensure(
                store,
                r("", "serviceaccounts"),
                &name,
                json!({"metadata": {"name": "default"}}),
            ),
        );
        log_err(
            "publish root CA",
            ensure(
                store,
                r("", "configmaps"),
                &name,
                json!({"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": ca_pem}}),
            ),
        );
    }
}

fn terminate_namespace(store: &Store, ns: &Value) {
    let name = meta::name(ns);
    let mut remaining = 0;
    for res in resources::RESOURCES
        .iter()
        .filter(|r| r.namespaced && r.is_stored())
    {
        for o in store.list_all(res, Some(name)) {
            remaining += 1;
            if !is_deleting(&o) {
                log_err(
                    "delete namespace content",
                    store.delete(res, name, meta::name(&o), &DeleteOptions::background()),
                );
            }
        }
    }
    if remaining == 0 {
        let nsres = r("", "namespaces");
        log_err(
            "finalize namespace",
            store.modify(nsres, "", name, Sub::Finalize, |o| {
                meta::set_at(o, &["spec", "finalizers"], json!([]));
                Ok(())
            }),
        );
        log_err(
            "remove namespace",
            store.finish_deletion(nsres, "", name, meta::uid(ns)),
        );
    }
}
