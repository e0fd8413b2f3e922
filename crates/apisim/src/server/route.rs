//! Query strings, routes and the RBAC verb of a request.

use std::collections::HashMap;

use http::{HeaderMap, Method, header};

use crate::auth::{Attributes, UserInfo};
use crate::error::{ApiError, ApiResult};
use crate::resources;
use crate::resources::ResourceInfo;
use crate::selector::FieldSelector;

/// Parsed query string (last value wins; `ports` keeps all).
#[derive(Debug, Default)]
pub(super) struct Query {
    params: HashMap<String, String>,
    pub(super) ports: Vec<String>,
}

impl Query {
    pub(super) fn parse(q: Option<&str>) -> Self {
        let mut out = Self::default();
        for pair in q.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(k);
            let v = percent_decode(v);
            if k == "ports" {
                out.ports.extend(v.split(',').map(str::to_string));
            }
            out.params.insert(k, v);
        }
        out
    }

    pub(super) fn get(&self, k: &str) -> Option<&str> {
        self.params.get(k).map(String::as_str)
    }

    pub(super) fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where a request goes.
#[derive(Debug)]
pub(super) enum Route {
    NonResource(String),
    ApiVersions,
    Resources(String, String),
    Groups,
    Group(String),
    Object {
        res: &'static ResourceInfo,
        ns: String,
        name: String,
        sub: String,
    },
    Collection {
        res: &'static ResourceInfo,
        ns: Option<String>,
    },
}

pub(super) fn route(path: &str) -> ApiResult<Route> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["api"] => Ok(Route::ApiVersions),
        ["api", v] => Ok(Route::Resources(String::new(), v.to_string())),
        ["api", v, rest @ ..] => resource_route("", v, rest, path),
        ["apis"] => Ok(Route::Groups),
        ["apis", g] => Ok(Route::Group(g.to_string())),
        ["apis", g, v] => Ok(Route::Resources(g.to_string(), v.to_string())),
        ["apis", g, v, rest @ ..] => resource_route(g, v, rest, path),
        _ => Ok(Route::NonResource(path.to_string())),
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str], path: &str) -> ApiResult<Route> {
    let find = |plural: &str| {
        resources::find(group, version, plural).ok_or_else(|| ApiError::no_route(path))
    };
    let ns_res = resources::find("", "v1", "namespaces").expect("namespaces resource");
    let namespace_sub =
        group.is_empty() && rest.len() == 3 && ns_res.subresources.contains(&rest[2]);
    match rest {
        ["namespaces", ns, plural, tail @ ..] if !namespace_sub => {
            let res = find(plural)?;
            if !res.namespaced {
                return Err(ApiError::no_route(path));
            }
            match tail {
                [] => Ok(Route::Collection {
                    res,
                    ns: Some(ns.to_string()),
                }),
                [name] => Ok(Route::Object {
                    res,
                    ns: ns.to_string(),
                    name: name.to_string(),
                    sub: String::new(),
                }),
                [name, sub] => Ok(Route::Object {
                    res,
                    ns: ns.to_string(),
                    name: name.to_string(),
                    sub: sub.to_string(),
                }),
                _ => Err(ApiError::no_route(path)),
            }
        }
        [plural] => Ok(Route::Collection {
            res: find(plural)?,
            ns: None,
        }),
        [plural, name] => {
            let res = find(plural)?;
            if res.namespaced {
                return Err(ApiError::no_route(path));
            }
            Ok(Route::Object {
                res,
                ns: String::new(),
                name: name.to_string(),
                sub: String::new(),
            })
        }
        [plural, name, sub] => {
            let res = find(plural)?;
            if res.namespaced {
                return Err(ApiError::no_route(path));
            }
            Ok(Route::Object {
                res,
                ns: String::new(),
                name: name.to_string(),
                sub: sub.to_string(),
            })
        }
        _ => Err(ApiError::no_route(path)),
    }
}

pub(super) fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split(',')
                .next()
                .is_some_and(|first| first.contains("as=Table"))
        })
}

/// The name a list or watch is restricted to by `fieldSelector=metadata.name=<name>`, which
/// upstream authorizes like a request for that name (so `resourceNames` rules apply); empty
/// when there is none, the selector does not parse, or the name is not a valid path segment.
pub(super) fn name_from_field_selector(selector: &str) -> String {
    FieldSelector::parse(selector)
        .ok()
        .and_then(|s| s.exact_match("metadata.name").map(str::to_string))
        .filter(|n| !matches!(n.as_str(), "." | "..") && !n.contains(['/', '%']))
        .unwrap_or_default()
}

/// The RBAC authorizer's refusal of `attrs` for `user`.
pub(super) fn forbidden(user: &UserInfo, attrs: &Attributes) -> ApiError {
    match &attrs.path {
        Some(p) => ApiError::forbidden_msg(format!(
            "forbidden: User \"{}\" cannot {} path \"{p}\"",
            user.name, attrs.verb
        )),
        None => ApiError::forbidden(
            &user.name,
            &attrs.verb,
            &attrs.resource_with_sub(),
            &attrs.group,
            (!attrs.namespace.is_empty()).then_some(attrs.namespace.as_str()),
            (!attrs.name.is_empty()).then_some(attrs.name.as_str()),
        ),
    }
}

pub(super) fn verb_for(method: &Method, route: &Route, q: &Query) -> &'static str {
    match (method, route) {
        (&Method::GET, Route::Collection { .. }) if q.flag("watch") => "watch",
        (&Method::GET, Route::Collection { .. }) => "list",
        // A watch of one object by its URL is authorized as `get`, as upstream (only a
        // request without a name becomes list or watch).
        (&Method::GET, Route::Object { sub, .. }) if sub == "portforward" || sub == "exec" => {
            "create"
        }
        (&Method::GET, _) | (&Method::HEAD, _) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, Route::Collection { .. }) => "deletecollection",
        (&Method::DELETE, _) => "delete",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_and_watch_by_name_carry_the_name() {
        assert_eq!(name_from_field_selector("metadata.name=web"), "web");
        assert_eq!(
            name_from_field_selector("spec.type=ClusterIP,metadata.name==web"),
            "web"
        );
        for none in [
            "",
            "metadata.name!=web",
            "metadata.namespace=web",
            "metadata.name=..",
            "metadata.name=a/b",
            "metadata.name=a%2f",
            "=broken",
        ] {
            assert_eq!(name_from_field_selector(none), "", "{none}");
        }
        let route = route("/api/v1/namespaces/default/services/web").unwrap();
        let q = Query::parse(Some("watch=true"));
        assert_eq!(verb_for(&Method::GET, &route, &q), "get");
    }

    #[test]
    fn routes() {
        match route("/api/v1/namespaces/default/pods/web-1/portforward").unwrap() {
            Route::Object { res, ns, name, sub } => {
                assert_eq!(
                    (res.plural, ns.as_str(), name.as_str(), sub.as_str()),
                    ("pods", "default", "web-1", "portforward")
                );
            }
            r => panic!("{r:?}"),
        }
        match route("/api/v1/namespaces/default").unwrap() {
            Route::Object { res, name, .. } => {
                assert_eq!((res.plural, name.as_str()), ("namespaces", "default"))
            }
            r => panic!("{r:?}"),
        }
        match route("/api/v1/namespaces/kube-system/finalize").unwrap() {
            Route::Object { res, name, sub, .. } => {
                assert_eq!(
                    (res.plural, name.as_str(), sub.as_str()),
                    ("namespaces", "kube-system", "finalize")
                );
            }
            r => panic!("{r:?}"),
        }
        match route("/apis/apps/v1/deployments").unwrap() {
            Route::Collection { res, ns } => assert_eq!((res.plural, ns), ("deployments", None)),
            r => panic!("{r:?}"),
        }
        match route("/apis/discovery.k8s.io/v1/namespaces/x/endpointslices").unwrap() {
            Route::Collection { res, ns } => {
                assert_eq!((res.plural, ns.as_deref()), ("endpointslices", Some("x")))
            }
            r => panic!("{r:?}"),
        }
        assert!(matches!(route("/version").unwrap(), Route::NonResource(_)));
        assert_eq!(route("/api/v1/nodes/n1/bogus/x").unwrap_err().code, 404);
        assert_eq!(route("/apis/apps/v1/nope").unwrap_err().code, 404);
        assert_eq!(route("/api/v1/pods/x").unwrap_err().code, 404);
    }

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb%2Ctier+in+(a)&ports=80&ports=443,8080&watch=1",
        ));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert_eq!(q.ports, vec!["80", "443", "8080"]);
        assert!(q.flag("watch"));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
