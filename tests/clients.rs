//! The SFTP clients clinics and their vendors already have, against a running gateway: OpenSSH
//! `sftp` with each cipher (and the new key exchanges, MACs and host keys), curl's `sftp://`
//! (libssh2), python3-paramiko, PuTTY's `psftp` with an Ed25519 and an RSA host key, and
//! `lftp`. Each uploads an archive that must be delivered to the insurer and downloads a file
//! from an outbox, compared byte for byte; what the gateway negotiated is read from its own
//! debug log. The matrix is printed (`--nocapture`) and every row must pass: a client missing
//! on the machine fails its row (scripts/install-deps installs them all).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{ClamdInstance, Daemon, TestConfig, outbox_names, repo_root, wait_for};

const CLINIC: &str = "clinic-1312345679";
const CLINIC_NO: &str = "1312345679";
const INSURER: &str = "insurer-06130017";
const INSURER_NO: &str = "06130017";
/// The gateway logs each key exchange's outcome at this level (russh's `negotiated:` line).
const LOG: &str = "info,russh::server::kex=debug";

/// What one connection negotiated, from the gateway's log.
#[derive(Debug, Clone, Default, PartialEq)]
struct Negotiated {
    kex: String,
    host_key: String,
    cipher: String,
    mac: String,
}

/// Parses russh's `negotiated: Names { kex: Name("…"), key: …, cipher: Name("…"),
/// client_mac: Name("…"), … }` debug line.
fn parse_negotiated(line: &str) -> Option<Negotiated> {
    let between = |from: &str, to: &str| -> Option<String> {
        let start = line.find(from)? + from.len();
        let end = start + line[start..].find(to)?;
        Some(line[start..end].to_owned())
    };
    let key = between("key: ", ", cipher:")?;
    let host_key = if key.contains("Ed25519") {
        "ssh-ed25519"
    } else if key.contains("NistP256") {
        "ecdsa-sha2-nistp256"
    } else if key.contains("Sha512") {
        "rsa-sha2-512"
    } else if key.contains("Sha256") {
        "rsa-sha2-256"
    } else {
        key.as_str()
    }
    .to_owned();
    let cipher = between("cipher: Name(\"", "\")")?;
    let mac = if cipher.contains("gcm") || cipher.contains("poly1305") {
        "(AEAD)".to_owned()
    } else {
        between("client_mac: Name(\"", "\")")?
    };
    Some(Negotiated {
        kex: between("kex: Name(\"", "\")")?,
        host_key,
        cipher,
        mac,
    })
}

fn negotiated_lines(daemon: &Daemon) -> Vec<String> {
    daemon
        .log_text()
        .lines()
        .filter(|l| l.contains("negotiated: Names"))
        .map(str::to_owned)
        .collect()
}

/// The SHA-256 fingerprint of an OpenSSH public key file, base64 without padding (what
/// `ssh-keygen -l` shows after `SHA256:`, curl's `--hostpubsha256`, PuTTY's `-hostkey`).
fn fingerprint(pub_file: &Path) -> String {
    use base64::Engine;
    use sha2::Digest;
    let text = std::fs::read_to_string(pub_file).expect("read public key");
    let blob = text.split_whitespace().nth(1).expect("a key line");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .expect("base64 key");
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(sha2::Sha256::digest(bytes))
}

/// The `known_hosts` line pinning the example host key of `kind` for the test daemon.
fn known_hosts(port: u16, kind: &str) -> String {
    let pub_file = repo_root().join(format!("certs-example/ssh_host_{kind}_key.pub"));
    let text = std::fs::read_to_string(pub_file).expect("read host key");
    let key: Vec<&str> = text.split_whitespace().take(2).collect();
    format!("[127.0.0.1]:{port} {}\n", key.join(" "))
}

fn host_pub(kind: &str) -> PathBuf {
    repo_root().join(format!("certs-example/ssh_host_{kind}_key.pub"))
}

fn client_key() -> PathBuf {
    repo_root().join("certs-example/ssh").join(CLINIC)
}

/// Runs a client; a client that is not installed is an error naming the package.
fn run(cmd: &mut Command, package: &str) -> Result<Output, String> {
    let out = cmd.output().map_err(|e| {
        format!(
            "{:?} cannot be run ({e}): install {package} (scripts/install-deps)",
            cmd.get_program()
        )
    })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{:?} failed ({}): {}{}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The first line of a command's output (stdout, else stderr): its version.
fn version(cmd: &mut Command) -> String {
    match cmd.output() {
        Ok(out) => {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        }
        Err(_) => "not installed".to_owned(),
    }
}

/// One client run: what it is, what it must negotiate, and how to upload and download.
struct Case {
    client: &'static str,
    version: String,
    /// What the gateway must have negotiated, where the case chooses it.
    expect_cipher: Option<&'static str>,
    expect_mac: Option<&'static str>,
    expect_host_key: Option<&'static str>,
    expect_kex: Option<&'static str>,
    /// Uploads `local` as `inbox/<name>`, downloads `outbox/<remote>` to `dest`.
    transfer: Box<TransferFn>,
}

/// Uploads and downloads with one client; the error says what failed.
type TransferFn = dyn Fn(&Transfer) -> Result<(), String>;

struct Transfer<'a> {
    port: u16,
    dir: &'a Path,
    local: PathBuf,
    name: String,
    remote: String,
    dest: PathBuf,
}

struct Row {
    client: &'static str,
    version: String,
    negotiated: Option<Negotiated>,
    upload_name: String,
    download: (Vec<u8>, PathBuf),
    result: Result<(), String>,
}

fn openssh(cipher: &'static str, extra: &'static [&'static str]) -> Case {
    let expect_mac =
        extra
            .iter()
            .find_map(|o| o.strip_prefix("MACs="))
            .or(if cipher.ends_with("-ctr") {
                Some("hmac-sha2-256-etm@openssh.com")
            } else {
                None
            });
    Case {
        client: "OpenSSH sftp",
        version: version(Command::new("ssh").arg("-V"))
            .split(',')
            .next()
            .unwrap_or("")
            .to_owned(),
        expect_cipher: Some(cipher),
        expect_mac,
        expect_host_key: extra
            .iter()
            .find_map(|o| o.strip_prefix("HostKeyAlgorithms=")),
        expect_kex: extra.iter().find_map(|o| o.strip_prefix("KexAlgorithms=")),
        transfer: Box::new(move |t| {
            let batch = t.dir.join(format!("{}.batch", t.name));
            std::fs::write(
                &batch,
                format!(
                    "put {} inbox/{}\nget outbox/{} {}\n",
                    t.local.display(),
                    t.name,
                    t.remote,
                    t.dest.display()
                ),
            )
            .map_err(|e| e.to_string())?;
            let batch = batch.display().to_string();
            let mut args = vec!["-c", cipher, "-b", &batch];
            for o in extra {
                args.extend(["-o", o]);
            }
            let mut sftp = support::sftp_command(t.port, CLINIC, CLINIC, &args);
            sftp.env("HOME", t.dir);
            run(&mut sftp, "openssh-client").map(drop)
        }),
    }
}

fn curl() -> Case {
    Case {
        client: "curl sftp:// (libssh2)",
        version: {
            let v = version(Command::new("curl").arg("-V"));
            let libssh2 = v
                .split_whitespace()
                .find(|w| w.starts_with("libssh2/"))
                .unwrap_or("no libssh2")
                .to_owned();
            format!(
                "{} {libssh2}",
                v.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
            )
        },
        expect_cipher: None,
        expect_mac: None,
        expect_host_key: None,
        expect_kex: None,
        transfer: Box::new(|t| {
            // libssh2 prefers the ECDSA host key: pin it as a clinic would.
            let url = format!("sftp://{CLINIC}@127.0.0.1:{}/", t.port);
            let curl = |args: &[&std::ffi::OsStr]| {
                let mut cmd = Command::new("curl");
                cmd.env("HOME", t.dir)
                    .args(["-sS", "--key"])
                    .arg(client_key())
                    .arg("--hostpubsha256")
                    .arg(fingerprint(&host_pub("ecdsa")))
                    .args(args);
                run(&mut cmd, "curl")
            };
            curl(&[
                "-T".as_ref(),
                t.local.as_os_str(),
                format!("{url}inbox/{}", t.name).as_ref(),
            ])?;
            curl(&[
                "-o".as_ref(),
                t.dest.as_os_str(),
                format!("{url}outbox/{}", t.remote).as_ref(),
            ])
            .map(drop)
        }),
    }
}

/// paramiko with the host key pinned from a known_hosts file (RejectPolicy for anything else).
const PARAMIKO: &str = r#"
import sys, paramiko
port, key, known, local, name, remote, dest = sys.argv[1:]
client = paramiko.SSHClient()
client.load_host_keys(known)
client.set_missing_host_key_policy(paramiko.RejectPolicy())
client.connect("127.0.0.1", port=int(port), username="clinic-1312345679",
               pkey=paramiko.Ed25519Key.from_private_key_file(key),
               allow_agent=False, look_for_keys=False)
sftp = client.open_sftp()
sftp.put(local, "inbox/" + name, confirm=False)
sftp.get("outbox/" + remote, dest)
client.close()
"#;

fn paramiko() -> Case {
    Case {
        client: "paramiko",
        version: version(Command::new(support::python()).args([
            "-c",
            "import paramiko; print('paramiko', paramiko.__version__)",
        ])),
        expect_cipher: None,
        expect_mac: None,
        expect_host_key: None,
        expect_kex: None,
        transfer: Box::new(|t| {
            let known = t.dir.join("paramiko_known_hosts");
            let lines: String = ["ed25519", "ecdsa", "rsa"]
                .iter()
                .map(|k| known_hosts(t.port, k))
                .collect();
            std::fs::write(&known, lines).map_err(|e| e.to_string())?;
            let mut cmd = Command::new(support::python());
            cmd.env("HOME", t.dir)
                .args(["-c", PARAMIKO, &t.port.to_string()])
                .arg(client_key())
                .arg(&known)
                .arg(&t.local)
                .arg(&t.name)
                .arg(&t.remote)
                .arg(&t.dest);
            run(&mut cmd, "python3-paramiko").map(drop)
        }),
    }
}

/// PuTTY's psftp with the host key of `kind` pinned (`-hostkey`) and the client key converted
/// to a .ppk by puttygen.
fn psftp(kind: &'static str, expect: &'static str) -> Case {
    Case {
        client: "PuTTY psftp",
        version: version(Command::new("psftp").arg("-V")).replace("psftp: Release", "psftp"),
        expect_cipher: None,
        expect_mac: None,
        expect_host_key: Some(expect),
        expect_kex: None,
        transfer: Box::new(move |t| {
            let ppk = t.dir.join("clinic.ppk");
            if !ppk.exists() {
                let mut puttygen = Command::new("puttygen");
                puttygen
                    .arg(client_key())
                    .args(["-O", "private", "-o"])
                    .arg(&ppk);
                run(&mut puttygen, "putty-tools")?;
            }
            let batch = t.dir.join(format!("{}.batch", t.name));
            std::fs::write(
                &batch,
                format!(
                    "put {} inbox/{}\nget outbox/{} {}\n",
                    t.local.display(),
                    t.name,
                    t.remote,
                    t.dest.display()
                ),
            )
            .map_err(|e| e.to_string())?;
            let mut cmd = Command::new("psftp");
            cmd.env("HOME", t.dir)
                .args(["-batch", "-P", &t.port.to_string(), "-i"])
                .arg(&ppk)
                .arg("-hostkey")
                .arg(format!("SHA256:{}", fingerprint(&host_pub(kind))))
                .arg("-b")
                .arg(&batch)
                .arg(format!("{CLINIC}@127.0.0.1"));
            run(&mut cmd, "putty-tools").map(drop)
        }),
    }
}

fn lftp() -> Case {
    Case {
        client: "lftp",
        version: version(Command::new("lftp").arg("--version"))
            .split('|')
            .nth(1)
            .map_or("not installed".to_owned(), |v| format!("lftp {}", v.trim())),
        expect_cipher: None,
        expect_mac: None,
        expect_host_key: None,
        expect_kex: None,
        transfer: Box::new(|t| {
            let known = t.dir.join("lftp_known_hosts");
            std::fs::write(&known, known_hosts(t.port, "ed25519")).map_err(|e| e.to_string())?;
            let connect = format!(
                "ssh -a -x -i {} -o IdentitiesOnly=yes -o BatchMode=yes \
                 -o StrictHostKeyChecking=yes -o UserKnownHostsFile={}",
                client_key().display(),
                known.display()
            );
            let script = format!(
                "set sftp:connect-program '{connect}'; open -u {CLINIC}, -p {} sftp://127.0.0.1; \
                 put {} -o inbox/{}; get outbox/{} -o {}",
                t.port,
                t.local.display(),
                t.name,
                t.remote,
                t.dest.display()
            );
            let mut cmd = Command::new("lftp");
            cmd.env("HOME", t.dir).args(["-c", &script]);
            run(&mut cmd, "lftp").map(drop)
        }),
    }
}

/// Runs the cases against one daemon, in turn, each with its own archive and outbox file.
fn run_cases(tc: &TestConfig, daemon: &Daemon, first: u64, cases: Vec<Case>) -> Vec<Row> {
    let work = tc.dir.path().join("clients");
    std::fs::create_dir_all(&work).expect("mkdir");
    let outbox = tc.state_dir().join("boxes").join(CLINIC).join("outbox");
    let mut rows = Vec::new();
    for (i, case) in cases.into_iter().enumerate() {
        let n = first + i as u64;
        let name = format!("matrix-{n:02}.zip");
        let local = work.join(&name);
        std::fs::write(
            &local,
            support::checkup_archive(CLINIC_NO, INSURER_NO, 2, n),
        )
        .expect("write archive");
        let remote = format!("download-{n:02}.p7m");
        let served = outbox.join(&remote);
        support::random_file(&served, 300_000 + n as usize * 1_001);
        let expected = std::fs::read(&served).expect("read outbox file");
        let dest = work.join(format!("downloaded-{n:02}"));
        let before = negotiated_lines(daemon).len();
        let t = Transfer {
            port: tc.sftp_port,
            dir: &work,
            local,
            name: name.clone(),
            remote,
            dest: dest.clone(),
        };
        let mut result = (case.transfer)(&t);
        let negotiated = negotiated_lines(daemon)
            .get(before)
            .and_then(|l| parse_negotiated(l));
        if result.is_ok() {
            result = check_negotiated(&case, negotiated.as_ref());
        }
        rows.push(Row {
            client: case.client,
            version: case.version,
            negotiated,
            upload_name: name,
            download: (expected, dest),
            result,
        });
    }
    rows
}

fn check_negotiated(case: &Case, got: Option<&Negotiated>) -> Result<(), String> {
    let Some(got) = got else {
        return Err("the gateway logged no key exchange".to_owned());
    };
    for (what, want, have) in [
        ("cipher", case.expect_cipher, &got.cipher),
        ("MAC", case.expect_mac, &got.mac),
        ("host key", case.expect_host_key, &got.host_key),
        ("kex", case.expect_kex, &got.kex),
    ] {
        if let Some(want) = want
            && want != have
        {
            return Err(format!("negotiated {what} {have}, expected {want}"));
        }
    }
    Ok(())
}

/// Each row's upload delivered to the insurer and its download equal to the outbox file.
fn check_delivery(tc: &TestConfig, rows: &mut [Row]) {
    let delivered =
        |name: &str, names: &[String]| names.iter().any(|n| n.ends_with(&format!("_{name}.p7m")));
    let pending: Vec<String> = rows
        .iter()
        .filter(|r| r.result.is_ok())
        .map(|r| r.upload_name.clone())
        .collect();
    wait_for(120, || {
        let names = outbox_names(tc, INSURER);
        pending.iter().all(|p| delivered(p, &names))
    });
    let names = outbox_names(tc, INSURER);
    for row in rows.iter_mut().filter(|r| r.result.is_ok()) {
        if !delivered(&row.upload_name, &names) {
            row.result = Err(format!("{} was not delivered", row.upload_name));
        } else if std::fs::read(&row.download.1).ok().as_ref() != Some(&row.download.0) {
            row.result = Err("the downloaded file differs from the outbox file".to_owned());
        }
    }
}

#[test]
fn every_client_uploads_a_delivered_archive_and_downloads_byte_for_byte() {
    let tc = TestConfig::new();
    let _clamd = ClamdInstance::start(tc.dir.path());
    let daemon = Daemon::start_with_env(&tc, &[("HANDOFF_LOG", LOG)]);
    // A second gateway with RSA host key algorithms only, sharing the first one's clamd: the
    // RSA row of PuTTY (which prefers Ed25519 whatever it is told to pin) and a check that
    // `[gateway.ssh]` narrows what is offered.
    let clamd_line = format!(
        "clamd = \"unix:{}\"",
        tc.dir.path().join("clamd.sock").display()
    );
    let rsa_tc = TestConfig::with(|text| {
        text.lines()
            .map(|l| {
                if l.starts_with("clamd = ") {
                    clamd_line.clone()
                } else if l == "[gateway.ssh]" {
                    "[gateway.ssh]\nhost_key_algorithms = [\"rsa-sha2-512\", \"rsa-sha2-256\"]"
                        .to_owned()
                } else {
                    l.to_owned()
                }
            })
            .map(|l| l + "\n")
            .collect()
    });
    let rsa_daemon = Daemon::start_with_env(&rsa_tc, &[("HANDOFF_LOG", LOG)]);

    let cases = vec![
        openssh("aes256-gcm@openssh.com", &[]),
        openssh("chacha20-poly1305@openssh.com", &[]),
        openssh(
            "aes128-gcm@openssh.com",
            &[
                "KexAlgorithms=ecdh-sha2-nistp256",
                "HostKeyAlgorithms=ecdsa-sha2-nistp256",
            ],
        ),
        openssh("aes256-ctr", &[]),
        openssh(
            "aes192-ctr",
            &[
                "MACs=hmac-sha2-512",
                "KexAlgorithms=diffie-hellman-group16-sha512",
                "HostKeyAlgorithms=rsa-sha2-512",
            ],
        ),
        openssh(
            "aes128-ctr",
            &[
                "MACs=hmac-sha2-256",
                "KexAlgorithms=ecdh-sha2-nistp384",
                "HostKeyAlgorithms=rsa-sha2-256",
            ],
        ),
        curl(),
        paramiko(),
        psftp("ed25519", "ssh-ed25519"),
        lftp(),
    ];
    let mut rows = run_cases(&tc, &daemon, 0, cases);
    check_delivery(&tc, &mut rows);
    let mut rsa_rows = run_cases(&rsa_tc, &rsa_daemon, 50, vec![psftp("rsa", "rsa-sha2-512")]);
    check_delivery(&rsa_tc, &mut rsa_rows);
    rows.extend(rsa_rows);

    println!("| client | version | kex | host key | cipher | MAC | result |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        let n = r.negotiated.clone().unwrap_or_default();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.client,
            r.version,
            n.kex,
            n.host_key,
            n.cipher,
            n.mac,
            match &r.result {
                Ok(()) => "works".to_owned(),
                Err(e) => format!("FAILS: {e}"),
            }
        );
    }
    let failed: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            r.result
                .as_ref()
                .err()
                .map(|e| format!("{}: {e}", r.client))
        })
        .collect();
    assert!(failed.is_empty(), "{failed:#?}\n{}", daemon.log_text());
}
