//! Who may call which gRPC service: a tower layer installed on every Atoll
//! gRPC server, in front of all its services.
//!
//! A [`Policy`] maps a gRPC service (`atoll.v1.RaftService`) to the roles
//! allowed to call it and whether the caller must be of the server's own
//! region. [`AuthzLayer`] reads the verified peer certificate of each
//! request (the TLS handshake already checked it against the cluster CA),
//! takes the identity it names ([`crate::tls::identity_from_cert_der`]) and
//! answers `UNAUTHENTICATED` (no usable certificate) or `PERMISSION_DENIED`
//! (wrong role or region, or a service the policy does not name) without
//! calling the service. Allowed requests carry the caller's
//! [`PeerIdentity`] in their extensions.
//!
//! The standard policies: [`Policy::region_server`] and [`Policy::gateway`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

use crate::tls::{identity_from_cert_der, identity_name, PeerIdentity, Role};

/// Where an allowed caller may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only the server's own region (gateways, which have no region, pass
    /// when their role is allowed).
    SameRegion,
    /// Any region.
    AnyRegion,
}

#[derive(Debug, Clone)]
struct Rule {
    roles: Vec<Role>,
    scope: Scope,
}

/// Certificates seen recently, so a certificate is parsed once and not on
/// every request (a connection presents the same one each time).
const CACHE_LIMIT: usize = 1024;

/// Which identities may call which gRPC service of one server.
#[derive(Debug)]
pub struct Policy {
    region: String,
    rules: HashMap<String, Rule>,
    cache: Mutex<HashMap<Vec<u8>, PeerIdentity>>,
}

impl Policy {
    /// An empty policy for a server of `region` (a gateway passes any
    /// string): every service is refused until [`Policy::allow`]ed.
    pub fn new(region: &str) -> Self {
        Self {
            region: region.to_string(),
            rules: HashMap::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Let `roles` from `scope` call `service` (its full gRPC name,
    /// `atoll.v1.RaftService`).
    pub fn allow(mut self, service: &str, roles: &[Role], scope: Scope) -> Self {
        self.rules.insert(
            service.to_string(),
            Rule {
                roles: roles.to_vec(),
                scope,
            },
        );
        self
    }

    /// A region server of `region`: Raft and region RPCs only from servers
    /// of the region, client RPCs only from its clients, forwarded requests
    /// from gateways and servers of any region.
    pub fn region_server(region: &str) -> Self {
        Self::new(region)
            .allow("atoll.v1.RaftService", &[Role::Server], Scope::SameRegion)
            .allow("atoll.v1.RegionService", &[Role::Server], Scope::SameRegion)
            .allow("atoll.v1.ClientService", &[Role::Client], Scope::SameRegion)
            .allow(
                "atoll.v1.ForwardService",
                &[Role::Gateway, Role::Server],
                Scope::AnyRegion,
            )
    }

    /// A federation gateway: `GatewayService` from servers (any region) and
    /// other gateways.
    pub fn gateway() -> Self {
        Self::new("").allow(
            "atoll.v1.GatewayService",
            &[Role::Gateway, Role::Server],
            Scope::AnyRegion,
        )
    }

    fn identity(&self, der: &[u8]) -> Result<PeerIdentity, Status> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = cache.get(der) {
            return Ok(id.clone());
        }
        let id = identity_from_cert_der(der)
            .map_err(|e| Status::unauthenticated(format!("client {e}")))?;
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(der.to_vec(), id.clone());
        Ok(id)
    }

    /// Whether the holder of `leaf` (DER; `None` without a client
    /// certificate) may call the gRPC method at `path`
    /// (`/atoll.v1.RaftService/Vote`). The caller's identity when it may.
    pub fn check(&self, path: &str, leaf: Option<&[u8]>) -> Result<PeerIdentity, Status> {
        let leaf = leaf.ok_or_else(|| {
            Status::unauthenticated("no client certificate: this endpoint requires mutual TLS")
        })?;
        let id = self.identity(leaf)?;
        let service = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        let Some(rule) = self.rules.get(service) else {
            return Err(Status::permission_denied(format!(
                "certificate {id} may not call {service}: no such service here"
            )));
        };
        let permitted = rule.roles.iter().any(|role| {
            *role == id.role
                && (id.role == Role::Gateway
                    || rule.scope == Scope::AnyRegion
                    || id.region.as_deref() == Some(self.region.as_str()))
        });
        if permitted {
            return Ok(id);
        }
        let wanted: Vec<String> = rule
            .roles
            .iter()
            .map(|r| match (rule.scope, r) {
                (Scope::AnyRegion, Role::Server | Role::Client) => {
                    identity_name(*r, "<any region>")
                }
                _ => identity_name(*r, &self.region),
            })
            .collect();
        Err(Status::permission_denied(format!(
            "certificate {id} may not call {service} (allowed: {})",
            if wanted.is_empty() {
                "nobody".to_string()
            } else {
                wanted.join(" or ")
            }
        )))
    }
}

/// The tower layer applying a [`Policy`] to every request of a tonic server
/// (`Server::builder().layer(AuthzLayer::new(policy))`).
#[derive(Debug, Clone)]
pub struct AuthzLayer {
    policy: Arc<Policy>,
}

impl AuthzLayer {
    /// A layer enforcing `policy`.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy: Arc::new(policy),
        }
    }
}

impl<S> tower::Layer<S> for AuthzLayer {
    type Service = Authz<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authz {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service [`AuthzLayer`] wraps around a tonic server's routes.
#[derive(Debug, Clone)]
pub struct Authz<S> {
    inner: S,
    policy: Arc<Policy>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, ResBody> tower::Service<http::Request<B>> for Authz<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let certs = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs());
        let leaf = certs.as_ref().and_then(|c| c.first()).map(|c| c.as_ref());
        match self.policy.check(req.uri().path(), leaf) {
            Ok(id) => {
                req.extensions_mut().insert(id);
                Box::pin(self.inner.call(req))
            }
            Err(status) => {
                tracing::debug!(path = req.uri().path(), %status, "gRPC call refused");
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::DevCa;

    fn leaf(ca: &DevCa, role: Role, region: &str) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        let b = ca.issue(role, region).expect("issue");
        rustls::pki_types::CertificateDer::from_pem_slice(b.cert_pem.as_bytes())
            .expect("pem")
            .to_vec()
    }

    #[test]
    fn region_server_policy() {
        let ca = DevCa::generate().expect("ca");
        let p = Policy::region_server("eu");
        let raft = "/atoll.v1.RaftService/Vote";
        let fwd = "/atoll.v1.ForwardService/Http";
        let client = "/atoll.v1.ClientService/Heartbeat";
        let s_eu = leaf(&ca, Role::Server, "eu");
        let s_us = leaf(&ca, Role::Server, "us");
        let c_eu = leaf(&ca, Role::Client, "eu");
        let c_us = leaf(&ca, Role::Client, "us");
        let gw = leaf(&ca, Role::Gateway, "");
        assert!(p.check(raft, Some(&s_eu)).is_ok());
        let denied = |r: Result<PeerIdentity, Status>| {
            r.err().map(|s| s.code()) == Some(tonic::Code::PermissionDenied)
        };
        assert!(denied(p.check(raft, Some(&s_us))));
        assert!(denied(p.check(raft, Some(&c_eu))));
        assert!(denied(p.check(raft, Some(&gw))));
        assert!(p.check(client, Some(&c_eu)).is_ok());
        assert!(denied(p.check(client, Some(&c_us))));
        assert!(denied(p.check(client, Some(&s_eu))));
        assert!(p.check(fwd, Some(&gw)).is_ok());
        assert!(p.check(fwd, Some(&s_us)).is_ok());
        assert!(denied(p.check(fwd, Some(&c_eu))));
        assert!(denied(p.check("/atoll.v1.GatewayService/Http", Some(&gw))));
        assert_eq!(
            p.check(raft, None).err().map(|s| s.code()),
            Some(tonic::Code::Unauthenticated)
        );
    }

    #[test]
    fn gateway_policy() {
        let ca = DevCa::generate().expect("ca");
        let p = Policy::gateway();
        let path = "/atoll.v1.GatewayService/Http";
        assert!(p.check(path, Some(&leaf(&ca, Role::Server, "us"))).is_ok());
        assert!(p.check(path, Some(&leaf(&ca, Role::Gateway, ""))).is_ok());
        assert!(p.check(path, Some(&leaf(&ca, Role::Client, "us"))).is_err());
    }
}
