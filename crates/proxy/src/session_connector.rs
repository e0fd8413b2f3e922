//! The proxy's [`Connector`] over a kubelan session: flows go to the agent, bare names get
//! the session's namespace appended.

use futures::future::BoxFuture;
use kubelan_proto::{FlowError, Target};
use kubelan_session::Session;

use crate::{Connector, FlowIo, UdpFlow};

/// The session as a proxy [`Connector`]; single-label names get the namespace appended,
/// as a pod's DNS search path would.
pub struct SessionConnector {
    session: Session,
    namespace: String,
    /// Wait for the agent's answer before accepting every CONNECT.
    strict: bool,
}

impl SessionConnector {
    /// A connector over `session`; bare names resolve in `namespace`; with `strict`, every
    /// CONNECT waits for the agent's answer.
    pub fn new(session: Session, namespace: String, strict: bool) -> Self {
        Self {
            session,
            namespace,
            strict,
        }
    }

    fn qualify(&self, target: Target) -> Target {
        qualify(target, &self.namespace)
    }
}

/// `target` with a single-label name completed by `namespace`, as a pod's DNS search path
/// would.
fn qualify(target: Target, namespace: &str) -> Target {
    match target {
        Target::Name { host, port } if !host.contains('.') => Target::Name {
            host: format!("{host}.{namespace}"),
            port,
        },
        t => t,
    }
}

impl Connector for SessionConnector {
    fn connect(&self, target: Target) -> BoxFuture<'static, Result<Box<dyn FlowIo>, FlowError>> {
        let session = self.session.clone();
        let target = self.qualify(target);
        // An address inside the prefixes the agent advertised is connected optimistically
        // (as ss-local does): one round trip less; if the agent then fails, the client's
        // connection is reset. Names and other addresses wait, so their errors become
        // proper SOCKS/HTTP replies.
        let fast =
            !self.strict && matches!(&target, Target::Addr(a) if self.session.advertised(a.ip()));
        Box::pin(async move {
            if fast {
                let conn = session.connect_optimistic(target).await?;
                return Ok(Box::new(conn) as Box<dyn FlowIo>);
            }
            let conn = session.connect(target).await?;
            Ok(Box::new(conn) as Box<dyn FlowIo>)
        })
    }

    fn open_udp(&self, target: Target) -> BoxFuture<'static, Result<UdpFlow, FlowError>> {
        let session = self.session.clone();
        let target = self.qualify(target);
        Box::pin(async move {
            let (tx, rx) = session.open_udp(target).await?;
            Ok(UdpFlow { tx, rx })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_get_the_namespace() {
        let name = |h: &str| Target::Name {
            host: h.into(),
            port: 80,
        };
        assert_eq!(qualify(name("web"), "dev"), name("web.dev"));
        assert_eq!(qualify(name("web.other"), "dev"), name("web.other"));
        let addr = Target::Addr("10.0.0.1:80".parse().unwrap());
        assert_eq!(qualify(addr.clone(), "dev"), addr);
    }
}
