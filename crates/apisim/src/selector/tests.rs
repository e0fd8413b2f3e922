use std::collections::BTreeMap;

use super::*;
use serde_json::json;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn sel(s: &str) -> LabelSelector {
    LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
}

#[test]
fn empty_selects_everything() {
    for s in ["", "   ", "\t"] {
        let selector = sel(s);
        assert!(selector.is_empty());
        assert!(selector.matches(&labels(&[])));
        assert!(selector.matches(&labels(&[("a", "b")])));
        assert_eq!(selector.to_string(), "");
    }
}

#[test]
fn equality_operators() {
    let web = labels(&[("app", "web"), ("tier", "front")]);
    let db = labels(&[("app", "db")]);
    let none = labels(&[]);
    for s in ["app=web", "app==web", " app = web "] {
        assert!(sel(s).matches(&web), "{s}");
        assert!(!sel(s).matches(&db), "{s}");
        assert!(!sel(s).matches(&none), "{s}");
    }
    let ne = sel("app!=web");
    assert!(!ne.matches(&web));
    assert!(ne.matches(&db));
    assert!(ne.matches(&none), "!= matches objects without the key");
}

#[test]
fn empty_value() {
    let s = sel("app=");
    assert!(s.matches(&labels(&[("app", "")])));
    assert!(!s.matches(&labels(&[("app", "x")])));
    assert!(!s.matches(&labels(&[])));
    assert_eq!(s.to_string(), "app=");
    assert!(sel("a=,b").matches(&labels(&[("a", ""), ("b", "1")])));
}

#[test]
fn set_operators() {
    let s = sel("env in (prod, staging)");
    assert!(s.matches(&labels(&[("env", "prod")])));
    assert!(s.matches(&labels(&[("env", "staging")])));
    assert!(!s.matches(&labels(&[("env", "dev")])));
    assert!(!s.matches(&labels(&[])));
    let n = sel("env notin (prod,staging)");
    assert!(!n.matches(&labels(&[("env", "prod")])));
    assert!(n.matches(&labels(&[("env", "dev")])));
    assert!(
        n.matches(&labels(&[])),
        "notin matches objects without the key"
    );
    // Empty entries are the empty value.
    let e = sel("env in (a,)");
    assert_eq!(e.requirements()[0].values(), ["", "a"]);
    assert!(e.matches(&labels(&[("env", "")])));
}

#[test]
fn existence_operators() {
    let has = sel("app");
    assert!(has.matches(&labels(&[("app", "")])));
    assert!(!has.matches(&labels(&[("other", "x")])));
    let hasnt = sel("!app");
    assert!(hasnt.matches(&labels(&[("other", "x")])));
    assert!(!hasnt.matches(&labels(&[("app", "x")])));
    let both = sel("app, !canary, tier in (front)");
    assert!(both.matches(&labels(&[("app", "x"), ("tier", "front")])));
    assert!(!both.matches(&labels(&[("app", "x"), ("tier", "front"), ("canary", "")])));
}

#[test]
fn numeric_operators() {
    let gt = sel("rank>3");
    assert!(gt.matches(&labels(&[("rank", "4")])));
    assert!(!gt.matches(&labels(&[("rank", "3")])));
    assert!(!gt.matches(&labels(&[("rank", "x")])));
    assert!(!gt.matches(&labels(&[])));
    assert!(sel("rank<3").matches(&labels(&[("rank", "-1")])));
    assert!(matches!(
        LabelSelector::parse("rank>x"),
        Err(SelectorError::NotAnInteger { .. })
    ));
}

#[test]
fn prefixed_keys() {
    let s = sel("app.kubernetes.io/name=web,example.com/x-y_z.w notin (a)");
    assert!(s.matches(&labels(&[("app.kubernetes.io/name", "web")])));
    assert_eq!(s.requirements().len(), 2);
}

#[test]
fn bad_syntax() {
    let cases = [
        ("env in (a,b", "unbalanced"),
        ("env in (a", "unbalanced"),
        ("env in a", "no parens"),
        ("env in", "no parens"),
        ("env notin ()", "empty set"),
        ("env in ()", "empty set"),
        ("=x", "empty key"),
        ("!=x", "empty key"),
        (",", "lone comma"),
        ("a=b,", "trailing comma"),
        ("a=b,,c", "double comma"),
        ("a b", "two words"),
        ("a=b c", "value then word"),
        ("a=(b)", "paren as value"),
        ("a in (b c)", "missing comma"),
        ("a)", "stray paren"),
        ("!", "bang alone"),
        ("!a=b", "bang with value"),
        ("a=b=c", "double op"),
        ("-a=b", "key starts with dash"),
        ("a-=b", "key ends with dash"),
        ("a/b/c=d", "two slashes"),
        ("/a=b", "empty prefix"),
        ("a/=b", "empty name"),
        ("Upper.Case/a=b", "uppercase prefix"),
        ("a=b$", "bad value char"),
        ("a=-b", "value starts with dash"),
        ("ключ=v", "non-ascii key"),
        ("a in (x,ü)", "non-ascii value"),
    ];
    for (input, why) in cases {
        let err = LabelSelector::parse(input);
        assert!(err.is_err(), "{input:?} ({why}) should fail, got {err:?}");
    }
    assert!(matches!(
        LabelSelector::parse("env in (a,b"),
        Err(SelectorError::UnbalancedParens { position: 7, .. })
    ));
    assert!(matches!(
        LabelSelector::parse("=x"),
        Err(SelectorError::EmptyKey { position: 0, .. })
    ));
    let long = format!("a={}", "x".repeat(64));
    assert!(matches!(
        LabelSelector::parse(&long),
        Err(SelectorError::InvalidValue { .. })
    ));
    let long_key = format!("{}=x", "k".repeat(64));
    assert!(matches!(
        LabelSelector::parse(&long_key),
        Err(SelectorError::InvalidKey { .. })
    ));
    // 63 is fine.
    sel(&format!("{}={}", "k".repeat(63), "v".repeat(63)));
}

#[test]
fn error_messages_explain() {
    let msg = LabelSelector::parse("env in (a").unwrap_err().to_string();
    assert!(msg.contains("not closed"), "{msg}");
    let msg = LabelSelector::parse("a=b$").unwrap_err().to_string();
    assert!(msg.contains("'$'"), "{msg}");
    let msg = LabelSelector::parse("a b").unwrap_err().to_string();
    assert!(msg.contains("position 2"), "{msg}");
}

#[test]
fn display_round_trip() {
    let inputs = [
        "app=web",
        "app==web",
        "b!=x, a",
        "!a",
        "env in (z, a, a)",
        "env notin (x)",
        "x in (,a)",
        "x in (,)",
        "x notin (,)",
        "app.kubernetes.io/name=web,tier,!canary,rank>2,rank<10",
        "a=",
    ];
    for input in inputs {
        let first = sel(input);
        let text = first.to_string();
        let second = sel(&text);
        assert_eq!(text, second.to_string(), "round trip of {input:?}");
        // Same meaning on a few label sets.
        for set in [
            labels(&[]),
            labels(&[("app", "web"), ("a", ""), ("x", "")]),
            labels(&[("env", "a"), ("b", "x"), ("rank", "5"), ("tier", "1")]),
        ] {
            assert_eq!(first.matches(&set), second.matches(&set), "{input:?}");
        }
    }
    assert_eq!(sel("b=1,a in (z,y)").to_string(), "a in (y,z),b=1");
    assert_eq!(sel("app==web").to_string(), "app=web");
}

#[test]
fn match_expressions() {
    let s = LabelSelector::from_json(&json!({
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod", "staging"]},
            {"key": "track", "operator": "NotIn", "values": ["canary"]},
            {"key": "tier", "operator": "Exists"},
            {"key": "legacy", "operator": "DoesNotExist", "values": []}
        ]
    }))
    .unwrap();
    let ok = labels(&[("app", "web"), ("env", "prod"), ("tier", "")]);
    assert!(s.matches(&ok));
    let mut canary = ok.clone();
    canary.insert("track".into(), "canary".into());
    assert!(!s.matches(&canary));
    let mut stable = ok.clone();
    stable.insert("track".into(), "stable".into());
    assert!(s.matches(&stable));
    let mut legacy = ok.clone();
    legacy.insert("legacy".into(), "1".into());
    assert!(!s.matches(&legacy));
    let mut no_tier = ok.clone();
    no_tier.remove("tier");
    assert!(!s.matches(&no_tier));
    assert_eq!(
        s.to_string(),
        "app=web,env in (prod,staging),!legacy,tier,track notin (canary)"
    );
    assert_eq!(sel(&s.to_string()), s);
}

#[test]
fn match_expressions_errors() {
    let bad = [
        json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
        json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
        json!({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": null}]}),
        json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
        json!({"matchExpressions": [{"key": "a", "operator": "DoesNotExist", "values": ["x"]}]}),
        json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
        json!({"matchExpressions": [{"key": "a", "operator": "in", "values": ["1"]}]}),
        json!({"matchExpressions": [{"operator": "Exists"}]}),
        json!({"matchExpressions": [{"key": "a"}]}),
        json!({"matchExpressions": [{"key": 1, "operator": "Exists"}]}),
        json!({"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]}),
        json!({"matchExpressions": [{"key": "a", "operator": "In", "values": "x"}]}),
        json!({"matchExpressions": ["a"]}),
        json!({"matchExpressions": {}}),
        json!({"matchLabels": {"a": 1}}),
        json!({"matchLabels": ["a"]}),
        json!({"matchLabels": {"a b": "c"}}),
        json!({"matchLabels": {"a": "c d"}}),
        json!("app=web"),
        json!([]),
    ];
    for value in bad {
        assert!(
            LabelSelector::from_json(&value).is_err(),
            "{value} should be rejected"
        );
    }
    let msg = LabelSelector::from_json(&json!({"matchExpressions": [
        {"key": "a", "operator": "In", "values": []}
    ]}))
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("In") && msg.contains("at least one value"),
        "{msg}"
    );
}

#[test]
fn null_and_empty_objects_select_everything() {
    for v in [
        json!(null),
        json!({}),
        json!({"matchLabels": null, "matchExpressions": null}),
        json!({"matchLabels": {}, "matchExpressions": []}),
    ] {
        let s = LabelSelector::from_json(&v).unwrap();
        assert!(s.is_empty());
        assert!(s.matches_object(&json!({})));
    }
}

#[test]
fn objects_and_labels_of() {
    let pod = json!({"metadata": {"name": "p", "labels": {"app": "web", "n": 3}}});
    assert_eq!(labels_of(&pod), labels(&[("app", "web")]));
    assert!(sel("app=web").matches_object(&pod));
    assert!(!sel("app=db").matches_object(&pod));
    assert!(sel("!app").matches_object(&json!({"metadata": {}})));
    assert!(sel("app!=x").matches_object(&json!(null)));
    assert!(!sel("app").matches_object(&json!("not an object")));
    let from_map = LabelSelector::from_map(&labels(&[("app", "web")])).unwrap();
    assert!(from_map.matches_object(&pod));
    assert!(LabelSelector::from_map(&labels(&[("bad key", "x")])).is_err());
}

#[test]
fn field_selector_operators() {
    let pod = json!({
        "metadata": {"name": "web-1", "namespace": "default"},
        "spec": {"nodeName": "node-a", "hostNetwork": true, "priority": 7},
        "status": {"phase": "Running"}
    });
    let m = |s: &str| FieldSelector::parse(s).unwrap().matches(&pod);
    assert!(m(""));
    assert!(m("metadata.name=web-1"));
    assert!(m("metadata.name==web-1"));
    assert!(!m("metadata.name!=web-1"));
    assert!(m("metadata.namespace=default,status.phase!=Pending"));
    assert!(!m("metadata.namespace=default,status.phase=Pending"));
    assert!(m("spec.nodeName=node-a"));
    assert!(m("spec.hostNetwork=true"));
    assert!(m("spec.priority=7"));
    // Missing fields compare as the empty string.
    assert!(m("spec.serviceAccountName="));
    assert!(m("spec.serviceAccountName!=x"));
    assert!(!m("spec.serviceAccountName=x"));
    assert!(m("status.phase.deeper="));
    assert!(m(" status.phase = Running , "));
}

#[test]
fn field_selector_escapes_and_display() {
    let s = FieldSelector::parse(r"metadata.name=a\,b\=c\\d,spec.type!=x").unwrap();
    assert_eq!(s.requirements()[0].value(), r"a,b=c\d");
    assert!(s.requirements()[1].is_negated());
    let text = s.to_string();
    assert_eq!(text, r"metadata.name=a\,b\=c\\d,spec.type!=x");
    assert_eq!(FieldSelector::parse(&text).unwrap(), s);
    assert_eq!(
        s.fields().collect::<Vec<_>>(),
        ["metadata.name", "spec.type"]
    );
    let v = FieldSelector::parse("a==b=c").unwrap();
    assert_eq!(v.requirements()[0].value(), "b=c");
}

#[test]
fn field_selector_exact_match() {
    let em = |s: &str| {
        FieldSelector::parse(s)
            .unwrap()
            .exact_match("metadata.name")
            .map(str::to_string)
    };
    assert_eq!(em("metadata.name=web").as_deref(), Some("web"));
    assert_eq!(em("metadata.name==web").as_deref(), Some("web"));
    assert_eq!(
        em("spec.type!=x,metadata.name=web,metadata.name=db").as_deref(),
        Some("web")
    );
    assert_eq!(em("metadata.name!=web"), None);
    assert_eq!(em("metadata.namespace=web"), None);
    assert_eq!(em(""), None);
}

#[test]
fn field_selector_errors() {
    for bad in [
        "metadata.name",
        "=x",
        "!=x",
        r"a=b\x",
        r"a=b\",
        r"a\.b=c",
        "a=b,c",
    ] {
        assert!(
            FieldSelector::parse(bad).is_err(),
            "{bad:?} should be rejected"
        );
    }
    let msg = FieldSelector::parse("metadata.name")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no '='"), "{msg}");
}

#[test]
fn single_name() {
    let one = |s: &str| {
        FieldSelector::parse(s)
            .unwrap()
            .single_name()
            .map(str::to_owned)
    };
    assert_eq!(one("metadata.name=web"), Some("web".into()));
    assert_eq!(one("metadata.name==web"), Some("web".into()));
    assert_eq!(one("metadata.name!=web"), None);
    assert_eq!(one("metadata.name=web,metadata.namespace=x"), None);
    assert_eq!(one("metadata.namespace=x"), None);
    assert_eq!(one(""), None);
}

#[test]
fn never_panics_on_odd_input() {
    let weird = [
        "(((",
        ")))",
        "!!!",
        "a in ((a))",
        "in",
        "notin",
        "in in (in)",
        "a notin (notin)",
        "é=ü",
        "a=\u{0}",
        "\u{feff}",
        "a,,,,",
        "a in (,,,)",
        "<",
        ">",
        "a<",
        "a>",
        "a<<1",
        "!in",
        "=",
        "==",
        "!=",
        "a!",
        "a!b",
        "😀",
        "a=😀",
        "a in (😀",
    ];
    for w in weird {
        let _ = LabelSelector::parse(w);
        let _ = FieldSelector::parse(w);
    }
    // Keywords are usable as values.
    assert!(sel("a=in").matches(&labels(&[("a", "in")])));
    assert!(sel("a notin (notin)").matches(&labels(&[("a", "x")])));
}
