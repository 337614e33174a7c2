//! Certificates made at test time with the `openssl` tool: a CA, a server
//! certificate for 127.0.0.1 and localhost, and a client certificate, all
//! in PEM, so TLS tests need nothing committed.

use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and the certificates it signed, in a folder.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Makes a CA named `name` and, signed by it, `server.pem` (for
    /// 127.0.0.1 and localhost) and `client.pem`, each with its key.
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let pki = Self {
            dir: dir.to_owned(),
        };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ])?;
        pki.sign("server", "subjectAltName=IP:127.0.0.1,DNS:localhost")?;
        pki.sign("client", "extendedKeyUsage=clientAuth")?;
        Ok(pki)
    }

    /// Signs a client certificate for `who` carrying `san` (`DNS:...` or
    /// `URI:...`) as its subject alternative name: `{who}.pem` and
    /// `{who}.key`.
    pub fn client(&self, who: &str, san: &str) -> anyhow::Result<()> {
        self.sign(
            who,
            &format!("extendedKeyUsage=clientAuth\nsubjectAltName={san}"),
        )
    }

    fn sign(&self, who: &str, extension: &str) -> anyhow::Result<()> {
        let (key, csr, pem, ext) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.pem"),
            format!("{who}.ext"),
        );
        std::fs::write(self.dir.join(&ext), format!("{extension}\n"))?;
        self.openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={who}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ])?;
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &pem,
        ])
    }

    fn openssl(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .context("could not run openssl (scripts/setup.sh installs it)")?;
        if !out.status.success() {
            bail!(
                "openssl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// A file of this folder (`ca.pem`, `server.key`, ...).
    pub fn file(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }
}
