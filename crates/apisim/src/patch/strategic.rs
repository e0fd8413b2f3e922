//! The strategic merge patch and server-side apply algorithm.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::rules::ListStrategy::{MergeByKey, MergeValues};
use super::rules::{KNOWN_KINDS, ListStrategy, MOUNTS};
use super::{PatchError, PatchKind, json_kind};

// ---------------------------------------------------------------------------------------------
// Strategic merge patch: the algorithm
// ---------------------------------------------------------------------------------------------

const PATCH_DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Applies a Kubernetes strategic merge patch (`application/strategic-merge-patch+json`) to an
/// object of the given kind (`Pod`, `Deployment`...). See the [module documentation](super) for
/// the rules. On error the target is left unchanged.
pub fn strategic_merge_patch(
    target: &mut Value,
    patch: &Value,
    kind: &str,
) -> Result<(), PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::WrongShape {
            content_type: PatchKind::StrategicMerge.content_type(),
            expected: "JSON object with the fields to change",
            found: json_kind(patch),
        });
    };
    let original = match target {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let merger = Merger {
        kind,
        known: KNOWN_KINDS.contains(&kind),
    };
    let merged = merger.merge_map(&mut Vec::new(), original, patch)?;
    *target = Value::Object(merged);
    Ok(())
}

/// Simulated server-side apply (`application/apply-patch+yaml`): the applied configuration is
/// strategically merged into the live object.
///
/// Field ownership (`metadata.managedFields`) is not tracked, so there are no conflicts and
/// `force` has no effect, and a field removed from a later applied configuration is **not**
/// removed from the live object: remove it with an explicit `null` or a JSON/merge patch.
/// Lists are merged by the strategic-merge keys rather than server-side apply's list-map keys
/// (for Service ports: `port` alone instead of `port` and `protocol`). Callers still decide what
/// happens to `status` and other fields the real server resets.
pub fn apply_patch(target: &mut Value, applied: &Value, kind: &str) -> Result<(), PatchError> {
    if !applied.is_object() {
        return Err(PatchError::WrongShape {
            content_type: PatchKind::Apply.content_type(),
            expected: "YAML or JSON object describing the object",
            found: json_kind(applied),
        });
    }
    strategic_merge_patch(target, applied, kind)
}

struct Merger<'k> {
    kind: &'k str,
    known: bool,
}

fn dotted(path: &[String]) -> String {
    if path.is_empty() {
        ".".to_owned()
    } else {
        path.join(".")
    }
}

/// A hashable identity for merge-key values and list values. Numbers compare by value (the Go
/// implementation decodes every number as a float64), everything else by its JSON text.
pub(super) fn identity(v: &Value) -> String {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.to_string()
            } else if let Some(u) = n.as_u64() {
                u.to_string()
            } else {
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
                    _ => n.to_string(),
                }
            }
        }
        other => other.to_string(),
    }
}

fn has_directive(v: &Value) -> bool {
    v.get(PATCH_DIRECTIVE).is_some()
}

fn directive_is(v: &Value, name: &str) -> bool {
    v.get(PATCH_DIRECTIVE).and_then(Value::as_str) == Some(name)
}

impl Merger<'_> {
    fn list_strategy(&self, path: &[String]) -> ListStrategy {
        if !self.known {
            return ListStrategy::Replace;
        }
        for (kind, mount, rules) in MOUNTS {
            if *kind != "*" && *kind != self.kind {
                continue;
            }
            let mut rest = path;
            let mut inside = true;
            for segment in mount.split('.').filter(|s| !s.is_empty()) {
                match rest.split_first() {
                    Some((head, tail)) if head == segment => rest = tail,
                    _ => {
                        inside = false;
                        break;
                    }
                }
            }
            if !inside || rest.is_empty() {
                continue;
            }
            let relative = rest.join(".");
            if let Some((_, strategy)) = rules.iter().find(|(p, _)| *p == relative) {
                return *strategy;
            }
        }
        ListStrategy::Replace
    }

    /// Merges one field. `None` as a result means the field is removed.
    fn merge_field(
        &self,
        path: &mut Vec<String>,
        original: Option<Value>,
        patch: &Value,
    ) -> Result<Option<Value>, PatchError> {
        Ok(match (original, patch) {
            (_, Value::Null) => None,
            (Some(Value::Object(o)), Value::Object(p)) => {
                Some(Value::Object(self.merge_map(path, o, p)?))
            }
            (_, Value::Object(p)) => Some(Value::Object(self.merge_map(path, Map::new(), p)?)),
            (Some(Value::Array(o)), Value::Array(p)) => {
                Some(Value::Array(self.merge_list(path, o, p)?))
            }
            (_, Value::Array(p)) => Some(Value::Array(self.merge_list(path, Vec::new(), p)?)),
            (_, scalar) => Some(scalar.clone()),
        })
    }

    /// A patch value placed where nothing was: directives applied and removed, nulls dropped.
    fn fresh_element(&self, path: &mut Vec<String>, patch: &Value) -> Result<Value, PatchError> {
        Ok(self.merge_field(path, None, patch)?.unwrap_or(Value::Null))
    }

    fn merge_map(
        &self,
        path: &mut Vec<String>,
        mut original: Map<String, Value>,
        patch: &Map<String, Value>,
    ) -> Result<Map<String, Value>, PatchError> {
        if let Some(directive) = patch.get(PATCH_DIRECTIVE) {
            match directive.as_str() {
                Some("replace") => {
                    let mut rest = patch.clone();
                    rest.remove(PATCH_DIRECTIVE);
                    return self.merge_map(path, Map::new(), &rest);
                }
                // Kubernetes leaves an empty map behind, not a missing field.
                Some("delete") => return Ok(Map::new()),
                Some("merge") => {}
                _ => {
                    return Err(PatchError::BadDirective {
                        path: dotted(path),
                        message: format!(
                            "$patch is {directive}; it must be \"replace\", \"delete\" or \"merge\""
                        ),
                    });
                }
            }
        }

        if let Some(retain) = patch.get(RETAIN_KEYS) {
            let bad = || PatchError::BadDirective {
                path: dotted(path),
                message: "$retainKeys must be a list of the field names to keep".into(),
            };
            let Value::Array(names) = retain else {
                return Err(bad());
            };
            let keep = names
                .iter()
                .map(|n| n.as_str().ok_or_else(bad))
                .collect::<Result<HashSet<&str>, _>>()?;
            if let Some(stray) = patch
                .iter()
                .find(|(k, v)| !v.is_null() && !k.starts_with('$') && !keep.contains(k.as_str()))
            {
                return Err(PatchError::BadDirective {
                    path: dotted(path),
                    message: format!(
                        "the patch sets {:?}, which $retainKeys does not list; add it to $retainKeys",
                        stray.0
                    ),
                });
            }
            original.retain(|k, _| keep.contains(k.as_str()));
        }

        // `$setElementOrder/<field>`: merge that list now and order it as asked.
        let mut ordered: HashSet<&str> = HashSet::new();
        for (key, order) in patch {
            let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) else {
                continue;
            };
            if field.is_empty() {
                return Err(PatchError::BadDirective {
                    path: dotted(path),
                    message: format!("{SET_ELEMENT_ORDER} must be followed by a field name"),
                });
            }
            let Value::Array(order) = order else {
                return Err(PatchError::BadDirective {
                    path: dotted(path),
                    message: format!("{key} must be a list"),
                });
            };
            let patch_list = match patch.get(field) {
                None => None,
                Some(Value::Array(list)) => Some(list),
                // A null or non-list value is handled as an ordinary field below.
                Some(_) => continue,
            };
            let live = match original.get(field) {
                Some(Value::Array(list)) => Some(list.clone()),
                _ => None,
            };
            path.push(field.to_owned());
            let result = self.merge_ordered_list(path, live, patch_list, order);
            path.pop();
            if let Some(list) = result? {
                original.insert(field.to_owned(), Value::Array(list));
            }
            ordered.insert(field);
        }

        for (key, value) in patch {
            if key.starts_with('$') {
                if key == PATCH_DIRECTIVE
                    || key == RETAIN_KEYS
                    || key.starts_with(SET_ELEMENT_ORDER)
                    || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
                {
                    continue;
                }
                return Err(PatchError::BadDirective {
                    path: dotted(path),
                    message: format!(
                        "unknown directive {key:?}; the supported ones are $patch, $retainKeys, \
                         $setElementOrder/<field> and $deleteFromPrimitiveList/<field>"
                    ),
                });
            }
            if ordered.contains(key.as_str()) {
                continue;
            }
            let live = original.remove(key);
            path.push(key.clone());
            let merged = self.merge_field(path, live, value);
            path.pop();
            if let Some(merged) = merged? {
                original.insert(key.clone(), merged);
            }
        }

        for (key, values) in patch {
            let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) else {
                continue;
            };
            let Value::Array(values) = values else {
                return Err(PatchError::BadDirective {
                    path: dotted(path),
                    message: format!("{key} must be a list of the values to remove"),
                });
            };
            if field.is_empty() {
                return Err(PatchError::BadDirective {
                    path: dotted(path),
                    message: format!(
                        "{DELETE_FROM_PRIMITIVE_LIST} must be followed by a field name"
                    ),
                });
            }
            let doomed: HashSet<String> = values.iter().map(identity).collect();
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|v| !doomed.contains(&identity(v)));
            }
        }

        Ok(original)
    }

    /// Merges a list that has a `$setElementOrder` directive and orders the result:
    /// elements named in the order list come in that order, the others keep their live
    /// order and are interleaved by their live position. `None` when neither side has it.
    fn merge_ordered_list(
        &self,
        path: &mut Vec<String>,
        live: Option<Vec<Value>>,
        patch: Option<&Vec<Value>>,
        order: &[Value],
    ) -> Result<Option<Vec<Value>>, PatchError> {
        let server_order = live.clone().unwrap_or_default();
        let merged = match (live, patch) {
            (None, None) => return Ok(None),
            (Some(live), None) => live,
            (live, Some(patch)) => self.merge_list(path, live.unwrap_or_default(), patch)?,
        };
        let key = match self.list_strategy(path) {
            MergeByKey(key) => Some(key),
            _ => None,
        };
        let order_ids: Vec<String> = order
            .iter()
            .filter_map(|item| element_id(item, key))
            .collect();
        Ok(Some(normalize_order(
            merged,
            &order_ids,
            &server_order,
            key,
        )))
    }

    fn merge_list(
        &self,
        path: &mut Vec<String>,
        original: Vec<Value>,
        patch: &[Value],
    ) -> Result<Vec<Value>, PatchError> {
        // A `{"$patch": "replace"}` element: the other elements become the whole list.
        if patch.iter().any(|v| directive_is(v, "replace")) {
            return patch
                .iter()
                .filter(|v| !has_directive(v))
                .map(|v| self.fresh_element(path, v))
                .collect();
        }
        match self.list_strategy(path) {
            ListStrategy::Replace => patch
                .iter()
                .filter(|v| !has_directive(v))
                .map(|v| self.fresh_element(path, v))
                .collect(),
            MergeValues => {
                let additions: Vec<&Value> = patch.iter().filter(|v| !has_directive(v)).collect();
                let mut seen = HashSet::new();
                let mut merged = Vec::with_capacity(original.len() + additions.len());
                for v in original.iter().chain(additions.iter().copied()) {
                    if seen.insert(identity(v)) {
                        merged.push(v.clone());
                    }
                }
                let patch_ids: Vec<String> = additions.iter().map(|v| identity(v)).collect();
                Ok(normalize_order(merged, &patch_ids, &original, None))
            }
            MergeByKey(key) => self.merge_keyed_list(path, original, patch, key),
        }
    }

    fn merge_keyed_list(
        &self,
        path: &mut Vec<String>,
        original: Vec<Value>,
        patch: &[Value],
        key: &'static str,
    ) -> Result<Vec<Value>, PatchError> {
        let mut elements = Vec::with_capacity(patch.len());
        for element in patch {
            match element {
                Value::Object(map) => elements.push(map),
                other => {
                    return Err(PatchError::ElementNotObject {
                        path: dotted(path),
                        key,
                        found: json_kind(other),
                    });
                }
            }
        }

        let server_order = original.clone();
        let mut slots: Vec<Option<Value>> = original.into_iter().map(Some).collect();
        let mut index: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, slot) in slots.iter().enumerate() {
            if let Some(id) = slot.as_ref().and_then(|v| element_id(v, Some(key))) {
                index.entry(id).or_default().push(i);
            }
        }

        // Deletions first, like Kubernetes, then merges in patch order.
        for map in &elements {
            match map.get(PATCH_DIRECTIVE) {
                None => {}
                Some(d) if d == "delete" => {
                    for i in index
                        .remove(&merge_key_id(map, key, path)?)
                        .unwrap_or_default()
                    {
                        if let Some(slot) = slots.get_mut(i) {
                            *slot = None;
                        }
                    }
                }
                Some(d) if d == "merge" => {}
                Some(d) => {
                    return Err(PatchError::BadDirective {
                        path: dotted(path),
                        message: format!(
                            "$patch is {d} in a list element; it must be \"delete\" (with the merge key \
                             {key:?}) or \"replace\""
                        ),
                    });
                }
            }
        }
        let mut patch_ids = Vec::new();
        for map in &elements {
            if map.get(PATCH_DIRECTIVE).is_some_and(|d| d == "delete") {
                continue;
            }
            let id = merge_key_id(map, key, path)?;
            let live_at = index
                .get(&id)
                .and_then(|positions| positions.first().copied());
            let live = live_at
                .and_then(|i| slots.get_mut(i))
                .and_then(Option::take);
            let merged = match live {
                Some(Value::Object(live)) => self.merge_map(path, live, map)?,
                _ => self.merge_map(path, Map::new(), map)?,
            };
            match live_at {
                Some(i) if i < slots.len() => slots[i] = Some(Value::Object(merged)),
                _ => {
                    index.entry(id.clone()).or_default().push(slots.len());
                    slots.push(Some(Value::Object(merged)));
                }
            }
            patch_ids.push(id);
        }
        let merged: Vec<Value> = slots.into_iter().flatten().collect();
        Ok(normalize_order(
            merged,
            &patch_ids,
            &server_order,
            Some(key),
        ))
    }
}

/// The identity of a patch element of a list merged by `key`; the key must be set.
fn merge_key_id(
    map: &Map<String, Value>,
    key: &'static str,
    path: &[String],
) -> Result<String, PatchError> {
    match map.get(key) {
        Some(v) if !v.is_null() => Ok(identity(v)),
        _ => Err(PatchError::MissingMergeKey {
            path: dotted(path),
            key,
        }),
    }
}

/// The identity of a list element: its merge key's value, or the element itself for lists of
/// plain values.
fn element_id(v: &Value, key: Option<&str>) -> Option<String> {
    match key {
        Some(key) => v.get(key).filter(|k| !k.is_null()).map(identity),
        None => Some(identity(v)),
    }
}

/// Orders a merged list the way Kubernetes does: elements named in `patch_order` come in that
/// order; the others keep the order of `server_order` (the live list) and are placed before a
/// patch element when they came before it in the live list.
fn normalize_order(
    merged: Vec<Value>,
    patch_order: &[String],
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let mut patch_pos: HashMap<&str, usize> = HashMap::new();
    for (i, id) in patch_order.iter().enumerate() {
        patch_pos.entry(id.as_str()).or_insert(i);
    }
    let mut server_pos: HashMap<String, usize> = HashMap::new();
    for (i, v) in server_order.iter().enumerate() {
        if let Some(id) = element_id(v, key) {
            server_pos.entry(id).or_insert(i);
        }
    }

    let mut from_patch = Vec::new();
    let mut server_only = Vec::new();
    for v in merged {
        let id = element_id(&v, key);
        let live = id.as_ref().and_then(|id| server_pos.get(id).copied());
        match id
            .as_ref()
            .and_then(|id| patch_pos.get(id.as_str()).copied())
        {
            Some(p) => from_patch.push((p, live, v)),
            None => server_only.push((live.unwrap_or(usize::MAX), live, v)),
        }
    }
    // Stable sorts: ties keep their merged order.
    from_patch.sort_by_key(|(p, _, _)| *p);
    server_only.sort_by_key(|(s, _, _)| *s);

    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = from_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((_, l, _)), Some((_, r, _))) => matches!((l, r), (Some(l), Some(r)) if l < r),
        };
        let next = if take_left { left.next() } else { right.next() };
        if let Some((_, _, v)) = next {
            out.push(v);
        }
    }
    out
}
