//! Whether the session's relay pod is ready, still starting, or will never start — and
//! then why, with the fix. Decided from the Job, its pods and the Job's events as the API
//! returns them; no API calls here.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};

/// What the relay pod is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayStatus {
    /// Ready: the client may connect.
    Ready {
        /// The pod's name.
        pod: String,
        /// The pod's IP.
        ip: String,
    },
    /// Not yet; what it is doing, for progress.
    Waiting(String),
    /// It will not start without a change; why and what to change.
    Failed(RelayFailure),
}

/// Why a relay pod will not start. Each message names the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayFailure {
    /// Pod Security admission (or another admission check) refused the pod.
    #[error(
        "the cluster refused to create the relay pod: {message}; kubelan's relay passes Pod Security `restricted`, so a stricter policy or an admission webhook of namespace {namespace} is in the way — ask its admin, or use another namespace with -n"
    )]
    Rejected {
        /// The namespace.
        namespace: String,
        /// The Job controller's event message.
        message: String,
    },
    /// The image cannot be pulled.
    #[error(
        "the relay image {image} cannot be pulled ({message}); pass --image with kubelan's image from a registry your nodes can pull (the agent's image works)"
    )]
    ImagePull {
        /// The image.
        image: String,
        /// The kubelet's message.
        message: String,
    },
    /// No node can run it.
    #[error(
        "no node can run the relay pod ({message}); it asks for 10m CPU and 32Mi memory and tolerates no taints, so free capacity or untaint a node"
    )]
    Unschedulable {
        /// The scheduler's message.
        message: String,
    },
    /// The relay exited or the Job failed.
    #[error(
        "the relay stopped before it was ready ({message}); `kubectl logs job/{job} -n {namespace}` shows why"
    )]
    Exited {
        /// The Job.
        job: String,
        /// The namespace.
        namespace: String,
        /// What the pod or Job said.
        message: String,
    },
}

/// The status of `job`'s relay from the Job, its pods (newest first is not required) and
/// the Job's events.
pub fn relay_status(job: &Job, pods: &[Pod], events: &[Event]) -> RelayStatus {
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let namespace = job.metadata.namespace.clone().unwrap_or_default();
    let exited = |message: String| {
        RelayStatus::Failed(RelayFailure::Exited {
            job: job_name.clone(),
            namespace: namespace.clone(),
            message,
        })
    };
    for p in pods {
        let name = p.metadata.name.clone().unwrap_or_default();
        let Some(status) = &p.status else { continue };
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready
            && p.metadata.deletion_timestamp.is_none()
            && let Some(ip) = status.pod_ip.clone().filter(|ip| !ip.is_empty())
        {
            return RelayStatus::Ready { pod: name, ip };
        }
        if matches!(status.phase.as_deref(), Some("Failed" | "Succeeded")) {
            let why = status
                .container_statuses
                .iter()
                .flatten()
                .find_map(|c| c.state.as_ref()?.terminated.as_ref())
                .map(|t| {
                    format!(
                        "exit code {}{}",
                        t.exit_code,
                        t.message
                            .as_deref()
                            .map(|m| format!(": {}", m.trim()))
                            .unwrap_or_default()
                    )
                })
                .or_else(|| status.message.clone())
                .unwrap_or_else(|| format!("pod {name} {}", status.phase.as_deref().unwrap_or("")));
            return exited(why);
        }
        for c in status.container_statuses.iter().flatten() {
            let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
                continue;
            };
            let reason = w.reason.clone().unwrap_or_default();
            let message = w.message.clone().unwrap_or_else(|| reason.clone());
            match reason.as_str() {
                "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => {
                    return RelayStatus::Failed(RelayFailure::ImagePull {
                        image: c.image.clone(),
                        message,
                    });
                }
                "CrashLoopBackOff"
                | "CreateContainerConfigError"
                | "CreateContainerError"
                | "RunContainerError" => return exited(format!("{reason}: {message}")),
                _ => {}
            }
        }
        if let Some(c) = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
            && c.reason.as_deref() == Some("Unschedulable")
        {
            return RelayStatus::Failed(RelayFailure::Unschedulable {
                message: c.message.clone().unwrap_or_default(),
            });
        }
        let what = status
            .container_statuses
            .iter()
            .flatten()
            .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
            .or_else(|| status.phase.clone())
            .unwrap_or_else(|| "Pending".into());
        return RelayStatus::Waiting(format!("pod {name}: {what}"));
    }
    if let Some(c) = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == "Failed" && c.status == "True")
        })
    {
        return exited(
            c.message
                .clone()
                .or_else(|| c.reason.clone())
                .unwrap_or_default(),
        );
    }
    // No pod: the Job controller could not create it. Its event says why (Pod Security
    // admission, quota, a webhook).
    if let Some(e) = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("FailedCreate"))
        .max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0))
    {
        return RelayStatus::Failed(RelayFailure::Rejected {
            namespace,
            message: e.message.clone().unwrap_or_default(),
        });
    }
    RelayStatus::Waiting(format!("job {job_name}: creating the relay pod"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(status: serde_json::Value) -> Job {
        serde_json::from_value(json!({"metadata": {"name": "kubelan-b7x2kq9d", "namespace": "team-a"}, "status": status})).unwrap()
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "kubelan-b7x2kq9d-x4z"}, "status": status}),
        )
        .unwrap()
    }

    fn event(reason: &str, message: &str) -> Event {
        serde_json::from_value(json!({"metadata": {"name": "e"}, "involvedObject": {},
            "reason": reason, "message": message}))
        .unwrap()
    }

    #[test]
    fn ready_waiting_and_every_failure_with_its_fix() {
        let j = job(json!({}));
        assert_eq!(
            relay_status(&j, &[], &[]),
            RelayStatus::Waiting("job kubelan-b7x2kq9d: creating the relay pod".into())
        );
        let rejected = relay_status(
            &j,
            &[],
            &[event(
                "FailedCreate",
                "Error creating: pods \"kubelan-b7x2kq9d-x4z\" is forbidden: violates PodSecurity \"restricted:latest\": seccompProfile",
            )],
        );
        let RelayStatus::Failed(f) = &rejected else {
            panic!("{rejected:?}")
        };
        assert!(matches!(f, RelayFailure::Rejected { .. }));
        assert!(f.to_string().contains("violates PodSecurity"), "{f}");
        assert!(
            f.to_string().contains("use another namespace with -n"),
            "{f}"
        );

        let pending = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "relay",
            "image": "ghcr.io/kubelan/kubelan:0.1.0", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        assert_eq!(
            relay_status(&j, &[pending], &[]),
            RelayStatus::Waiting("pod kubelan-b7x2kq9d-x4z: ContainerCreating".into())
        );
        let pull = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "relay",
            "image": "registry.example/kubelan:9", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}),
        );
        let RelayStatus::Failed(f) = relay_status(&j, &[pull], &[]) else {
            panic!()
        };
        assert!(f.to_string().starts_with("the relay image registry.example/kubelan:9 cannot be pulled (Back-off pulling image); pass --image"), "{f}");

        let unsched = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
            "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}]}),
        );
        let RelayStatus::Failed(f) = relay_status(&j, &[unsched], &[]) else {
            panic!()
        };
        assert!(matches!(f, RelayFailure::Unschedulable { .. }), "{f}");

        let failed = pod(
            json!({"phase": "Failed", "containerStatuses": [{"name": "relay",
            "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 2, "message": "unknown flag --carrier-port\n"}}}]}),
        );
        let RelayStatus::Failed(f) = relay_status(&j, &[failed], &[]) else {
            panic!()
        };
        assert_eq!(
            f.to_string(),
            "the relay stopped before it was ready (exit code 2: unknown flag --carrier-port); `kubectl logs job/kubelan-b7x2kq9d -n team-a` shows why"
        );

        let ready = pod(json!({"phase": "Running", "podIP": "10.244.1.9",
            "conditions": [{"type": "Ready", "status": "True"}]}));
        assert_eq!(
            relay_status(&j, &[ready], &[]),
            RelayStatus::Ready {
                pod: "kubelan-b7x2kq9d-x4z".into(),
                ip: "10.244.1.9".into()
            }
        );
        let j = job(json!({"conditions": [{"type": "Failed", "status": "True",
            "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}));
        assert!(matches!(
            relay_status(&j, &[], &[]),
            RelayStatus::Failed(RelayFailure::Exited { .. })
        ));
    }
}
