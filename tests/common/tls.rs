//! HTTPS in front of a plain server, for HTTPS trackers: [`TestCa`], a certificate authority
//! made with `openssl` (its certificate is what a test points `SSL_CERT_FILE` at) with the
//! server certificates it signs, and [`TlsTerminator`], a `stunnel4` on 127.0.0.1 that takes
//! TLS on one port per certificate and forwards the plain bytes to a local port.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::net::{free_port, loopback_addr};
use super::payload::TestDir;
use super::procs::{run_checked, Proc, STARTUP_TIMEOUT};
use super::tools::{require_tool, tethered};

/// A certificate authority of the test's own (an EC P-256 key and a self-signed certificate,
/// valid 30 days). Files are removed on drop.
pub struct TestCa {
    dir: TestDir,
    cert: PathBuf,
}

/// A server certificate and its key (PEM files).
#[derive(Clone, Debug)]
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

const CA_CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = bitrush test CA
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
";

/// Runs `openssl` with `args` (split on whitespace) in `dir`.
fn openssl(args: &str, dir: &Path) {
    let mut cmd = Command::new(require_tool("openssl"));
    cmd.args(args.split_whitespace()).current_dir(dir);
    run_checked("openssl", cmd, Duration::from_secs(60));
}

/// The key options of every certificate here: EC P-256, unencrypted.
const NEW_KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

impl TestCa {
    pub fn new() -> TestCa {
        let dir = TestDir::new("ca");
        fs::write(dir.join("ca.cnf"), CA_CONFIG).expect("write CA config");
        openssl(
            &format!("req -x509 -config ca.cnf {NEW_KEY} -keyout ca.key -out ca.pem -days 30"),
            dir.path(),
        );
        TestCa {
            cert: dir.join("ca.pem"),
            dir,
        }
    }

    /// The authority's certificate (PEM): what `SSL_CERT_FILE` names to trust it.
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// A server certificate signed by this authority for `alt_names` (openssl's
    /// `subjectAltName` syntax, e.g. `IP:127.0.0.1, DNS:localhost`), valid 30 days, or expired
    /// since yesterday if `expired`. `name` (a plain word) names its files.
    pub fn server_cert(&self, name: &str, alt_names: &str, expired: bool) -> ServerCert {
        let ext = format!(
            "[v3_server]\n\
             basicConstraints = CA:FALSE\n\
             keyUsage = critical, digitalSignature\n\
             extendedKeyUsage = serverAuth\n\
             subjectAltName = {alt_names}\n\
             authorityKeyIdentifier = keyid\n"
        );
        fs::write(self.dir.join(format!("{name}.cnf")), ext).expect("write server cert config");
        openssl(
            &format!("req -new {NEW_KEY} -keyout {name}.key -out {name}.csr -subj /CN=tracker"),
            self.dir.path(),
        );
        // -days -1: valid until a day before it was made, i.e. expired.
        let days = if expired { "-1" } else { "30" };
        openssl(
            &format!(
                "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                 -out {name}.pem -days {days} -extfile {name}.cnf -extensions v3_server"
            ),
            self.dir.path(),
        );
        ServerCert {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        }
    }
}

/// stunnel4 on 127.0.0.1: one TLS port per certificate, each forwarding to `backend` (a plain
/// TCP port on 127.0.0.1). Killed on drop.
pub struct TlsTerminator {
    ports: Vec<u16>,
    proc: Proc,
    _dir: TestDir,
}

impl TlsTerminator {
    /// Starts stunnel4 with one service per certificate on free ports; returns once every port
    /// accepts connections.
    pub fn start(backend: u16, certs: &[ServerCert]) -> TlsTerminator {
        let stunnel = require_tool("stunnel4");
        let dir = TestDir::new("stunnel");
        let mut last_logs = String::new();
        for _attempt in 0..5 {
            let ports: Vec<u16> = certs.iter().map(|_| free_port()).collect();
            let mut config = String::from("foreground = yes\npid =\n");
            for (i, (cert, port)) in certs.iter().zip(&ports).enumerate() {
                config.push_str(&format!(
                    "[tracker{i}]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{backend}\n\
                     cert = {}\nkey = {}\n",
                    cert.cert.display(),
                    cert.key.display()
                ));
            }
            let conf = dir.join("stunnel.conf");
            fs::write(&conf, config).expect("write stunnel config");
            let mut cmd = tethered(&stunnel);
            cmd.arg(&conf);
            let mut proc = Proc::spawn("stunnel4", cmd);
            let deadline = Instant::now() + STARTUP_TIMEOUT;
            let listening = |port: &u16| {
                TcpStream::connect_timeout(&loopback_addr(*port), Duration::from_secs(1)).is_ok()
            };
            loop {
                if proc.try_status().is_some() {
                    // Most likely lost the race for a port: try others.
                    last_logs = proc.logs();
                    break;
                }
                if ports.iter().all(listening) {
                    return TlsTerminator {
                        ports,
                        proc,
                        _dir: dir,
                    };
                }
                if Instant::now() >= deadline {
                    panic!("stunnel4 did not listen on {ports:?}\n{}", proc.logs());
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("stunnel4 failed to start 5 times\n{last_logs}");
    }

    /// The TLS port of the `i`-th certificate.
    pub fn port(&self, i: usize) -> u16 {
        self.ports[i]
    }

    /// `https://127.0.0.1:PORT/announce` for the `i`-th certificate.
    pub fn https_url(&self, i: usize) -> String {
        format!("https://127.0.0.1:{}/announce", self.port(i))
    }

    pub fn logs(&self) -> String {
        self.proc.logs()
    }
}
