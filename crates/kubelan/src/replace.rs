//! `kubelan replace svc/NAME [LOCAL:]PORT...`: arguments and exit codes; the output and the
//! link to the relay are `expose`'s ([`crate::expose::drive`]); the session itself is
//! `kubelan_expose::replace`.

use std::process::ExitCode;

use clap::Args;
use kubelan_cluster::session_objects::Mode;
use kubelan_expose::ReplaceRequest;

use crate::Output;
use crate::expose::{SessionArgs, drive};

/// `kubelan replace`.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  kubelan replace svc/web 8080:80            the Service's port 80 → this machine's 127.0.0.1:8080\n  kubelan replace svc/web 3000:http -n team  by port name, in namespace team\n  kubelan replace svc/dns 5353:53/udp        one protocol of a port number\n  kubelan replace svc/web 172.16.1.11:8080:80  to a LAN PC (on a gateway host)\n\nOn exit (Ctrl-C) the Service is put back exactly as it was; if this client dies, the\nrelay pod puts it back within about 10 s and Kubernetes removes the session."
)]
pub(crate) struct ReplaceArgs {
    /// The Service: `svc/NAME`.
    #[arg(value_name = "svc/NAME")]
    service: String,
    /// Service ports to take over: `[LOCAL:]PORT[/udp]`, PORT the Service's port number or
    /// name, LOCAL `[HOST:]PORT` on this machine (default: 127.0.0.1 and the same number).
    #[arg(value_name = "[LOCAL:]PORT", required = true)]
    ports: Vec<String>,
    #[command(flatten)]
    pub(crate) session: SessionArgs,
    /// The global `-o` (JSON: one object per event and line).
    #[arg(skip)]
    pub(crate) output: Output,
}

/// Runs `kubelan replace` until Ctrl-C or SIGTERM.
pub(crate) async fn run(args: ReplaceArgs) -> anyhow::Result<ExitCode> {
    let request = ReplaceRequest::parse(&args.service, &args.ports)?;
    let start = move |options, events, shutdown| {
        tokio::spawn(async move {
            kubelan_expose::run_replace(&request, &options, events, shutdown).await
        })
    };
    // The table's rows follow the Service's ports, known only once it is read: rows are
    // shown per listener as connections arrive (the plain lines carry everything).
    drive(&args.session, Mode::Replace, &[], args.output, start).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ReplaceArgs,
    }

    #[test]
    fn arguments_parse_into_a_request() {
        let a = Cli::try_parse_from(["x", "svc/web", "8080:80", "3000:grpc"])
            .unwrap()
            .args;
        let r = ReplaceRequest::parse(&a.service, &a.ports).unwrap();
        assert_eq!(r.service, "web");
        assert_eq!(r.ports.len(), 2);
        assert!(
            Cli::try_parse_from(["x", "svc/web"]).is_err(),
            "a port is required"
        );
        let a = Cli::try_parse_from(["x", "web", "80"]).unwrap().args;
        let e = ReplaceRequest::parse(&a.service, &a.ports).unwrap_err();
        assert!(e.to_string().contains("svc/NAME"));
    }
}
