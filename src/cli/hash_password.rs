//! `handoff hash-password`: the config holds only a password's hash. The password is read on
//! standard input, never from the command line, where a process listing would show it.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use argon2::PasswordHasher;

pub fn run() -> anyhow::Result<ExitCode> {
    let mut input = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the password")?;
    let password = input.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!password.is_empty(), "empty password");
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| anyhow::anyhow!("hashing: {e}"))?;
    println!("{hash}");
    Ok(ExitCode::SUCCESS)
}
