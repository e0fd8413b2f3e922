//! `pods/log`.

use std::time::Duration;

use bytes::Bytes;
use http::{Response, header};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};
use crate::{meta, resources};

use super::ApiServer;
use super::body::{Body, channel_body, full};
use super::route::Query;

impl ApiServer {
    pub(super) async fn logs(&self, ns: &str, name: &str, q: &Query) -> ApiResult<Response<Body>> {
        let pods = resources::find("", "v1", "pods").expect("pods resource");
        let pod = self.store.get(pods, ns, name)?;
        let containers: Vec<String> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|c| meta::str_at(c, &["name"]).to_string())
                    .collect()
            })
            .unwrap_or_default();
        let container = match q.get("container") {
            Some(c) if !c.is_empty() => {
                if !containers.iter().any(|x| x == c) {
                    return Err(ApiError::bad_request(format!(
                        "container {c} is not valid for pod {name}"
                    )));
                }
                c.to_string()
            }
            _ if containers.len() == 1 => containers[0].clone(),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                )));
            }
        };
        let file = self
            .backend
            .log_file(ns, name, &container, q.flag("previous"))
            .ok_or_else(|| ApiError::bad_request(format!("container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating")))?;
        let text = tokio::fs::read(&file).await.unwrap_or_default();
        let mut start = 0;
        if let Some(n) = q.get("tailLines").and_then(|s| s.parse::<usize>().ok()) {
            let mut seen = 0;
            for (i, b) in text.iter().enumerate().rev() {
                if *b == b'\n' && i + 1 < text.len() {
                    seen += 1;
                    if seen == n {
                        start = i + 1;
                        break;
                    }
                }
            }
        }
        let head = Bytes::from(text[start..].to_vec());
        if !q.flag("follow") {
            let mut r = Response::new(full(head));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain"),
            );
            return Ok(r);
        }
        // Follow: poll the file for appended bytes until the client goes away or the pod
        // is gone.
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let store = self.store.clone();
        let (ns, name, uid) = (
            ns.to_string(),
            name.to_string(),
            meta::uid(&pod).to_string(),
        );
        let mut offset = text.len() as u64;
        tokio::spawn(async move {
            if !head.is_empty() && tx.send(head).await.is_err() {
                return;
            }
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Ok(data) = tokio::fs::read(&file).await
                    && (data.len() as u64) > offset
                {
                    let chunk = Bytes::from(data[offset as usize..].to_vec());
                    offset = data.len() as u64;
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                }
                let alive = store
                    .get(pods, &ns, &name)
                    .is_ok_and(|p| meta::uid(&p) == uid);
                if !alive || tx.is_closed() {
                    return;
                }
            }
        });
        let mut r = Response::new(channel_body(rx));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain"),
        );
        Ok(r)
    }
}
