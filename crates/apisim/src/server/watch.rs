//! Watches: the initial list, events and bookmarks, streamed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, header};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::resources::ResourceInfo;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{EventKind, Store, with_type_meta};
use crate::{meta, table};

use super::ApiServer;
use super::body::{Body, channel_body};
use super::route::Query;

impl ApiServer {
    pub(super) fn watch(
        &self,
        res: &'static ResourceInfo,
        ns: Option<String>,
        labels: LabelSelector,
        fields: FieldSelector,
        q: &Query,
        table: bool,
    ) -> Response<Body> {
        let (tx, rx) = mpsc::channel::<Bytes>(256);
        let store = self.store.clone();
        let rv_param = q.get("resourceVersion").unwrap_or("").to_string();
        let send_initial = q.flag("sendInitialEvents");
        let bookmarks = q.flag("allowWatchBookmarks");
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(1800));
        let include = table::parse_include_object(q.get("includeObject"));
        tokio::spawn(async move {
            let w = Watcher {
                res,
                ns,
                labels,
                fields,
                table,
                include,
                first_table: true,
            };
            w.run(store, tx, rv_param, send_initial, bookmarks, timeout)
                .await;
        });
        let mut r = Response::new(channel_body(rx));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        r
    }
}

/// One watch request's filter and encoding.
struct Watcher {
    res: &'static ResourceInfo,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    table: bool,
    include: table::IncludeObject,
    first_table: bool,
}

impl Watcher {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches(obj)
    }

    fn in_scope(&self, ev_res: &ResourceInfo, obj: &Value) -> bool {
        ev_res.plural == self.res.plural
            && ev_res.group == self.res.group
            && self.ns.as_deref().is_none_or(|n| meta::namespace(obj) == n)
    }

    fn encode(&mut self, kind: &str, obj: &Value) -> Bytes {
        let object = if self.table {
            let rv = meta::str_at(obj, &["metadata", "resourceVersion"]).to_string();
            let mut t = table::to_table(
                self.res.kind,
                std::slice::from_ref(obj),
                time::OffsetDateTime::now_utc(),
                self.include,
                &rv,
            );
            if !self.first_table
                && let Some(o) = t.as_object_mut()
            {
                o.remove("columnDefinitions");
            }
            self.first_table = false;
            t
        } else {
            with_type_meta(self.res, obj.clone())
        };
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut md = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let mut line = serde_json::to_vec(&json!({
            "type": "BOOKMARK",
            "object": {"kind": self.res.kind, "apiVersion": self.res.api_version(), "metadata": md},
        }))
        .unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }

    async fn run(
        mut self,
        store: Arc<Store>,
        tx: mpsc::Sender<Bytes>,
        rv_param: String,
        send_initial: bool,
        bookmarks: bool,
        timeout: Duration,
    ) {
        let mut rx = store.subscribe();
        let explicit_rv = rv_param.parse::<u64>().ok().filter(|v| *v > 0);
        let mut last_rv;
        if send_initial || explicit_rv.is_none() {
            let (items, rv) = store.list(self.res, self.ns.as_deref(), &self.labels, &self.fields);
            last_rv = rv;
            for o in &items {
                let line = self.encode("ADDED", o);
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            if send_initial {
                let _ = tx.send(self.bookmark(rv, true)).await;
            }
        } else {
            let from = explicit_rv.unwrap_or(0);
            match store.events_since(from) {
                Err(e) => {
                    let mut line =
                        serde_json::to_vec(&json!({"type": "ERROR", "object": e.to_status()}))
                            .unwrap_or_default();
                    line.push(b'\n');
                    let _ = tx.send(Bytes::from(line)).await;
                    return;
                }
                Ok((backlog, now)) => {
                    last_rv = now.max(from);
                    for ev in backlog {
                        if let Some(line) = self.event_line(&ev)
                            && tx.send(line).await.is_err()
                        {
                            return;
                        }
                    }
                }
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = tick.tick(), if bookmarks => {
                    if tx.send(self.bookmark(last_rv, false)).await.is_err() {
                        return;
                    }
                }
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        if ev.rv <= last_rv {
                            continue;
                        }
                        last_rv = ev.rv;
                        if let Some(line) = self.event_line(&ev) && tx.send(line).await.is_err() {
                            return;
                        }
                    }
                    // A slow client: end the watch; it resumes from its last version.
                    Err(_) => return,
                },
            }
        }
    }

    fn event_line(&mut self, ev: &crate::store::Event) -> Option<Bytes> {
        if !self.in_scope(ev.res, &ev.object) {
            return None;
        }
        let now = self.matches(&ev.object);
        let before = ev.old.as_ref().is_some_and(|o| self.matches(o));
        let kind = match ev.kind {
            EventKind::Added => now.then_some("ADDED"),
            EventKind::Deleted => now.then_some("DELETED"),
            EventKind::Modified => match (before, now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            },
        }?;
        Some(self.encode(kind, &ev.object))
    }
}
