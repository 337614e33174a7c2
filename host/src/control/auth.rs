//! Who is calling the control plane, and what they may do: bearer tokens
//! (`authorization: Bearer <token>`) matched by their SHA-256 against the
//! configured ones, or client certificates (mutual TLS) matched by a
//! subject alternative name, each with a role. Without either configured
//! every caller may do everything, which the daemon only allows on
//! loopback or behind mutual TLS.

use crate::config::{ClientCertificateConfig, Role, TokenConfig};
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

/// The configured tokens (by their SHA-256) and client certificates (by a
/// subject alternative name), each with the caller it makes.
#[derive(Clone, Debug, Default)]
pub struct Access {
    tokens: Vec<([u8; 32], Caller)>,
    certificates: Vec<(String, Caller)>,
}

/// The caller of one request, as its token or certificate says.
#[derive(Clone, Debug)]
pub struct Caller {
    name: String,
    role: Role,
    pipeline_prefix: Option<String>,
    topics: Vec<String>,
}

impl Access {
    /// Access by `tokens` and `certificates`; neither lets everyone in.
    pub fn new(tokens: &[TokenConfig], certificates: &[ClientCertificateConfig]) -> Self {
        let caller = |name: &str, role, prefix: &Option<String>, topics: &[String]| Caller {
            name: name.to_owned(),
            role,
            pipeline_prefix: prefix.clone(),
            topics: topics.to_vec(),
        };
        let tokens = tokens
            .iter()
            .filter_map(|t| {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(&t.sha256, &mut digest).ok()?;
                Some((
                    digest,
                    caller(&t.name, t.role, &t.pipeline_prefix, &t.topics),
                ))
            })
            .collect();
        let certificates = certificates
            .iter()
            .map(|c| {
                (
                    c.san.clone(),
                    caller(&c.name, c.role, &c.pipeline_prefix, &c.topics),
                )
            })
            .collect();
        Self {
            tokens,
            certificates,
        }
    }

    /// Whether callers must present a token or a known certificate.
    pub fn required(&self) -> bool {
        !self.tokens.is_empty() || !self.certificates.is_empty()
    }

    /// The caller of `request`: by its token when it sends one, else by
    /// its client certificate; UNAUTHENTICATED when neither is known.
    pub fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        if !self.required() {
            return Ok(Caller {
                name: "anyone (no tokens configured)".into(),
                role: Role::Admin,
                pipeline_prefix: None,
                topics: Vec::new(),
            });
        }
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(token) = token {
            return self.by_token(token);
        }
        let names = request
            .peer_certs()
            .and_then(|chain| chain.first().map(certificate_names))
            .unwrap_or_default();
        self.by_certificate(&names)
    }

    fn by_token(&self, token: &str) -> Result<Caller, Status> {
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        // Every configured token is compared, in constant time each, so the
        // time taken says nothing about which one nearly matched.
        let mut found = None;
        for (known, caller) in &self.tokens {
            if same_secret(known, &digest) {
                found = Some(caller);
            }
        }
        found
            .cloned()
            .ok_or_else(|| Status::unauthenticated("the token is not one this daemon knows"))
    }

    /// The caller whose client certificate carries `names` (its subject
    /// alternative names).
    fn by_certificate(&self, names: &[String]) -> Result<Caller, Status> {
        let known = self
            .certificates
            .iter()
            .find(|(san, _)| names.contains(san));
        match known {
            Some((_, caller)) => Ok(caller.clone()),
            None if self.certificates.is_empty() || names.is_empty() => {
                Err(Status::unauthenticated(
                    "this daemon needs a token: pass --token or set EDDY_TOKEN \
                     (`authorization: Bearer <token>`)",
                ))
            }
            None => Err(Status::unauthenticated(format!(
                "the client certificate (names: {}) is not one this daemon knows: an operator \
                 lists it in [[client-certificates]], or pass --token",
                names.join(", ")
            ))),
        }
    }
}

/// The DNS and URI subject alternative names of a DER certificate; none
/// if it cannot be parsed (rustls already checked it against the CA).
fn certificate_names(der: &rustls_pki_types::CertificateDer<'_>) -> Vec<String> {
    let Ok(certificate) = webpki::EndEntityCert::try_from(der) else {
        return Vec::new();
    };
    certificate
        .valid_dns_names()
        .chain(certificate.valid_uri_names())
        .map(str::to_owned)
        .collect()
}

/// Whether `a` and `b` are equal, compared in time that depends only on
/// their lengths, so timing tells a guesser nothing about a secret.
pub(super) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Caller {
    fn at_least(&self, role: Role, what: &str) -> Result<(), Status> {
        if self.role >= role {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "{} is a {:?} and may not {what}; that needs a {role:?} token",
                self.name, self.role
            )))
        }
    }

    /// May read status and state.
    pub fn may_read(&self) -> Result<(), Status> {
        self.at_least(Role::Reader, "read")
    }

    /// May upload modules.
    pub fn may_upload(&self) -> Result<(), Status> {
        self.at_least(Role::Deployer, "upload modules")
    }

    /// May delete modules: they are shared by every tenant's pipelines.
    pub fn may_delete_modules(&self) -> Result<(), Status> {
        self.at_least(Role::Admin, "delete modules")
    }

    /// May change pipeline `name` (create, pause, resume, delete).
    pub fn may_change(&self, name: &str) -> Result<(), Status> {
        self.at_least(Role::Deployer, "change pipelines")?;
        match &self.pipeline_prefix {
            Some(prefix) if self.role < Role::Admin && !name.starts_with(prefix.as_str()) => {
                Err(Status::permission_denied(format!(
                    "{} may only change pipelines whose names start with `{prefix}`, not `{name}`",
                    self.name
                )))
            }
            _ => Ok(()),
        }
    }

    /// May have a pipeline read or write `topic`.
    pub fn may_use_topic(&self, topic: &str) -> Result<(), Status> {
        if self.role >= Role::Admin || self.topics.is_empty() {
            return Ok(());
        }
        let allowed = self
            .topics
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => topic.starts_with(prefix),
                None => topic == pattern,
            });
        if allowed {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "{} may not have a pipeline use topic `{topic}` (allowed: {})",
                self.name,
                self.topics.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, secret: &str, role: Role) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            role,
            sha256: hex::encode(Sha256::digest(secret.as_bytes())),
            pipeline_prefix: None,
            topics: Vec::new(),
        }
    }

    fn request(token: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().expect("ascii");
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    #[test]
    fn tokens_say_who_calls_and_roles_what_they_may_do() {
        let mut team = token("team-a", "s3cret-team", Role::Deployer);
        team.pipeline_prefix = Some("team-a.".into());
        team.topics = vec!["team-a.*".into(), "shared".into()];
        let access = Access::new(
            &[
                token("ops", "s3cret-ops", Role::Admin),
                team,
                token("dash", "s3cret-dash", Role::Reader),
            ],
            &[],
        );
        for token in [None, Some("guess")] {
            let refused = access.caller(&request(token)).map(drop);
            assert!(
                refused.is_err_and(|e| e.code() == tonic::Code::Unauthenticated),
                "{token:?}"
            );
        }

        let reader = access.caller(&request(Some("s3cret-dash"))).expect("known");
        assert!(reader.may_read().is_ok());
        assert!(
            reader
                .may_change("x")
                .is_err_and(|e| e.code() == tonic::Code::PermissionDenied)
        );
        assert!(reader.may_upload().is_err());

        let deployer = access.caller(&request(Some("s3cret-team"))).expect("known");
        assert!(deployer.may_change("team-a.wc").is_ok());
        assert!(deployer.may_change("team-b.wc").is_err());
        assert!(deployer.may_use_topic("team-a.lines").is_ok());
        assert!(deployer.may_use_topic("shared").is_ok());
        assert!(deployer.may_use_topic("shared2").is_err());
        assert!(deployer.may_use_topic("team-b.lines").is_err());

        let admin = access.caller(&request(Some("s3cret-ops"))).expect("known");
        assert!(admin.may_change("anything").is_ok() && admin.may_use_topic("any").is_ok());
    }

    #[test]
    fn without_tokens_everyone_may_do_everything() {
        let access = Access::new(&[], &[]);
        assert!(!access.required());
        let anyone = access.caller(&request(None)).expect("open");
        assert!(anyone.may_change("x").is_ok() && anyone.may_upload().is_ok());
    }

    #[test]
    fn certificates_are_known_by_a_subject_alternative_name_and_a_token_comes_first() {
        let access = Access::new(
            &[token("ops", "s3cret-ops", Role::Admin)],
            &[ClientCertificateConfig {
                name: "team-a ci".into(),
                role: Role::Deployer,
                san: "spiffe://example.com/team-a/ci".into(),
                pipeline_prefix: Some("team-a.".into()),
                topics: Vec::new(),
            }],
        );
        assert!(access.required());
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let ci = access
            .by_certificate(&names(&["ci.internal", "spiffe://example.com/team-a/ci"]))
            .expect("known");
        assert!(ci.may_change("team-a.wc").is_ok() && ci.may_change("b").is_err());
        let stranger = access.by_certificate(&names(&["spiffe://example.com/team-a/ci2"]));
        assert!(stranger.is_err_and(|e| {
            e.code() == tonic::Code::Unauthenticated && e.message().contains("team-a/ci2")
        }));
        let nobody = access.by_certificate(&[]);
        assert!(nobody.is_err_and(|e| e.message().contains("--token")));
        // Without a certificate in the request, the token decides.
        let admin = access.caller(&request(Some("s3cret-ops"))).expect("token");
        assert!(admin.may_change("anything").is_ok());
        assert!(access.caller(&request(None)).is_err());
    }
}
